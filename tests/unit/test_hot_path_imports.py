"""The hot path imports nothing from the cold side (DESIGN.md): checked in a clean interpreter.

Not a deny-list, which a new cold module would slip past: importing the proxy may load only the
modules listed here, and no third-party package but its two parsers.
"""

import ast
import subprocess
import sys

# What the request path may read: itself, the providers' rules, the snapshot it is handed and
# the settings it is started with.
HOT_PACKAGES = ("lectr.proxy", "lectr.providers")
HOT_MODULES = {"lectr", "lectr.proxy", "lectr.providers", "lectr.snapshot", "lectr.snapshot.directory",
               "lectr.snapshot.keys", "lectr.settings", "lectr.settings.config", "lectr.settings.alerts"}
THIRD_PARTY = {"httptools", "orjson", "uvloop"}

_PROBE = """
import sys
import lectr.proxy.server, lectr.proxy.protocol, lectr.proxy.handler, lectr.proxy.upstream, lectr.proxy.decide
third = sorted({m.split('.')[0] for m in sys.modules}
               - set(sys.stdlib_module_names) - {'lectr', 'cython_runtime'} - {m for m in sys.modules if m.startswith('_')})
print(repr((sorted(m for m in sys.modules if m.startswith('lectr')), third)))
"""


def _loaded() -> tuple[list[str], list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out)


def test_the_proxy_loads_no_cold_module():
    lectr_modules, _ = _loaded()
    cold = [m for m in lectr_modules if m not in HOT_MODULES and not m.startswith(tuple(p + "." for p in HOT_PACKAGES))]
    assert cold == []


def test_the_proxy_loads_no_third_party_package_but_its_parsers():
    _, third_party = _loaded()
    assert set(third_party) <= THIRD_PARTY, third_party


def test_every_cold_package_exists_and_is_outside_the_allowance():
    # The allowance must not silently cover a cold package by a prefix.
    import pkgutil

    import lectr
    packages = {m.name for m in pkgutil.iter_modules(lectr.__path__, "lectr.") if m.ispkg}
    cold = {"lectr.recording", "lectr.pricing", "lectr.platform", "lectr.api", "lectr.dashboard", "lectr.jobs",
            "lectr.alerts", "lectr.analysis", "lectr.bench", "lectr.devtools"}
    assert cold <= packages
    assert not any(c.startswith(tuple(HOT_PACKAGES)) for c in cold)


def test_importing_lectr_has_no_side_effects():
    code = "import threading, lectr.cli, lectr.app; print(threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
