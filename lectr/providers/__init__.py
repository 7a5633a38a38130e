"""Provider modules: where each provider lives and the quirks of talking to it."""
