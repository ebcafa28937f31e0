"""Worker processes: the pool, one worker's loop, its reader/writer pipeline, typed messages."""
