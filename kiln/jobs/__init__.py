"""Jobs: scheduler (one worker process per job), worker entry point, recovery."""
