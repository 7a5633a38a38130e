"""Unit tests: pure logic, no socket, database or lectr process (a clean interpreter is started only
to see what an import loads). ``pytest tests/unit`` runs them alone, in seconds."""
