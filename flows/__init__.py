"""Prefect flows: thin orchestration around ``apogeenet.stages`` (no arithmetic here)."""
