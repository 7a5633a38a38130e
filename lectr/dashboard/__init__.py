"""The dashboard: server-rendered pages, their charts and formatters, templates and stylesheet."""
