"""One small training loop shared by every method, its config, optimizer, schedules and checkpoints."""
