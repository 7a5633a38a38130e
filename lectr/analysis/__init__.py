"""The scheduled, cold-path analysis of what the proxy recorded."""
