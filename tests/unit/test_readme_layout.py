"""The README's layout (Architecture → Layout) names every module of ``lectr/``, and no module
that is not there: the picture a newcomer reads stays the tree they find."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_ENTRY = re.compile(r"^([│ ]*)[├└]── (\S+)")


def _layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Layout")
    block = text[text.index("```", start) + 3:]
    return block[:block.index("```")].splitlines()


def _modules_in_layout() -> set[str]:
    """``lectr/...py`` paths the picture names, read from its tree (4 columns per level)."""
    found, folders = set(), []
    for line in _layout_block():
        m = _ENTRY.match(line)
        if m is None:
            if line.rstrip("/") in ("lectr", "tests"):
                folders = [line.rstrip("/")]
            continue
        depth, name = len(m.group(1)) // 4 + 1, m.group(2)
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        elif name.endswith(".py"):
            found.add("/".join(folders + [name]))
    return found


def _modules_in_tree() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "lectr").rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}


def test_the_layout_names_every_module():
    assert sorted(_modules_in_tree() - _modules_in_layout()) == []


def test_the_layout_names_no_module_that_is_gone():
    assert sorted(_modules_in_layout() - _modules_in_tree()) == []
