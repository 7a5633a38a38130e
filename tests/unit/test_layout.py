"""The tests are grouped by what they need to run, and the unit group needs nothing but Python."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
GROUPS = {"unit", "protocol", "e2e", "browser"}
# Fixtures of tests/conftest.py that start PostgreSQL, the mock provider, the proxy or lectr serve.
RUNNING_FIXTURES = {"pg_server_url", "database_url", "mock", "harness", "lectr_factory", "module_lectr_factory",
                    "lectr_server"}


def test_every_test_module_is_in_one_group():
    strays = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py") if p.parent.name not in GROUPS]
    assert strays == [], f"move each into tests/unit, tests/protocol, tests/e2e or tests/browser: {strays}"


def test_unit_tests_ask_for_no_database_server_or_process():
    asked = {}
    for path in sorted((TESTS / "unit").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {a.arg for a in node.args.args} & RUNNING_FIXTURES
                if names:
                    asked[f"{path.name}::{node.name}"] = sorted(names)
    assert asked == {}
