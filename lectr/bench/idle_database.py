"""``lectr bench --idle-postgres``: the bench's Postgres gets only CPU time nothing else wants.

In a deployment the database runs on a machine of its own; on a two-core bench machine it shares
the load generator's core. ``pg_ctl`` starts the postmaster in a session of its own, and Linux
schedules each session as one group (``kernel.sched_autogroup_enabled``): a group is weighed
against the others as a whole, so neither ``nice`` nor ``SCHED_IDLE`` on Postgres's processes
lets the load generator or the mock cut its time slice short, and every query a summary runs
delays their wake-ups by up to a slice (about 1.5 ms here; measured in ``README.md``). A cgroup
with ``cpu.idle`` set is the group-level ``SCHED_IDLE``: whatever wakes up outside it runs at once.

Needs write access to a cgroup ``cpu`` controller (root, or a delegated subtree): the v1
hierarchy at ``/sys/fs/cgroup/cpu`` or a v2 one whose ``cgroup.subtree_control`` lists ``cpu``.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


def _usable(root: Path) -> bool:
    if not (root / "cpu.idle").exists() and not _v2_with_cpu(root):
        return False
    return os.access(root, os.W_OK)


def _v2_with_cpu(root: Path) -> bool:
    try:
        return "cpu" in (root / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False


class Unavailable(Exception):
    """No idle cgroup can be made here; the message says why."""


class IdleGroup:
    """A cgroup whose processes run only when no other process wants the CPU.

    ``create`` raises ``Unavailable`` where no writable ``cpu`` controller is found;
    ``move(pid)`` moves a process (its children from then on follow it); ``remove`` moves
    whatever is left back to the parent group and deletes the group.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str, roots: tuple[Path, ...] = CGROUP_ROOTS) -> IdleGroup:
        why = "no writable cgroup cpu controller with cpu.idle (needs root or a delegated cgroup)"
        for root in roots:
            if not _usable(root):
                continue
            path = root / name
            try:
                path.mkdir(exist_ok=True)
                (path / "cpu.idle").write_text("1")
            except OSError as exc:
                why = f"{path}: {exc.strerror or exc}"
                continue
            return cls(path)
        raise Unavailable(why)

    def move(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def move_tree(self, pid: int) -> list[int]:
        """Move ``pid`` and the children it has now; return the pids moved."""
        pids = [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
        for each in pids:
            try:
                self.move(each)
            except ProcessLookupError:
                pass  # exited meanwhile
        return pids

    def remove(self) -> None:
        try:
            left = (self.path / "cgroup.procs").read_text().split()
        except OSError:
            return
        for pid in left:
            try:
                (self.path.parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError:
            pass
