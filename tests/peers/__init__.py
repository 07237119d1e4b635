"""Real framework servers the integration tests start as subprocesses."""
