"""The preload: the engine that settles every requested repo (`engine`), waiting for another
process's preload (`waiting`), the resolved plan (`plan`), retries, signals, progress, and the
hand-off to the service (`handoff`)."""
