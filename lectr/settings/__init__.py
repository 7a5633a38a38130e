"""Settings: every ``LECTR_*`` variable with its one default, and checks of what operators give."""
