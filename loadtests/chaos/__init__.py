"""The chaos soak of docs/reliability.md: real processes, random faults, every delivery checked."""
