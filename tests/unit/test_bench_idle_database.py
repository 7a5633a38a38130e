"""The bench's idle cgroup for Postgres, against a directory standing in for a cgroup controller.

The kernel's side (that a ``cpu.idle`` group's processes give way at once) is measured by the
benchmark, not asserted here; this holds the bookkeeping: where the group is made, what is
moved into it, what happens where none can be made, and that removing it leaves nothing behind.
"""

import pytest

from lectr.bench import idle_database
from lectr.bench.idle_database import IdleGroup, Unavailable


def _controller(path):
    path.mkdir()
    (path / "cpu.idle").write_text("0")
    (path / "cgroup.procs").write_text("")
    return path


def test_the_group_is_made_idle_under_the_first_usable_controller(tmp_path):
    missing, cpu = tmp_path / "absent", _controller(tmp_path / "cpu")
    group = IdleGroup.create("lectr-bench-1", roots=(missing, cpu))
    assert group.path == cpu / "lectr-bench-1"
    assert (group.path / "cpu.idle").read_text() == "1"


class _Tree:
    """psutil.Process for a stand-in process 100 with one child, 101."""

    def __init__(self, pid):
        self.pid = pid

    def children(self, recursive=False):
        return [_Tree(101)] if self.pid == 100 else []


def test_a_process_tree_is_moved_and_handed_back_on_removal(tmp_path, monkeypatch):
    monkeypatch.setattr(idle_database.psutil, "Process", _Tree)
    cpu = _controller(tmp_path / "cpu")
    group = IdleGroup.create("g", roots=(cpu,))
    assert group.move_tree(100) == [100, 101]
    # a real cgroup.procs lists every member; the stand-in file keeps the last pid written
    assert (group.path / "cgroup.procs").read_text() == "101"
    group.remove()
    assert (cpu / "cgroup.procs").read_text() == "101"


def test_without_a_usable_controller_it_says_why(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()  # no cpu.idle, no cgroup.subtree_control listing cpu
    with pytest.raises(Unavailable, match="cpu.idle"):
        IdleGroup.create("g", roots=(plain,))


def test_a_v2_hierarchy_that_delegates_cpu_is_usable(tmp_path):
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.subtree_control").write_text("cpuset cpu io memory pids\n")
    (v2 / "cgroup.procs").write_text("")
    group = IdleGroup.create("g", roots=(v2,))
    assert (group.path / "cpu.idle").read_text() == "1"
