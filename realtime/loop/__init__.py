"""Event-loop primitives with no Django and no I/O of their own: loop-local state, the timer
wheel, the bounded send queue and rate limiter, and fire-and-forget tasks that log failures.
Everything above builds on these; they import nothing else from the project."""
