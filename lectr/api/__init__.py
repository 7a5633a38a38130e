"""The admin listener: metrics now, and the management API and dashboard on the same port."""
