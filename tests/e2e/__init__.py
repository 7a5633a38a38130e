"""End-to-end tests: real PostgreSQL, real ``lectr serve`` and CLI processes, the official openai SDK,
SMTP and webhook receivers, the jobs against their tables."""
