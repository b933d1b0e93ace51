"""Streams: the event log (the source of truth), the group commit that appends to it, the
per-process hub that fans committed events out to subscribers, the Redis bus between servers,
the head tracker that finds events the bus missed, and history pages."""
