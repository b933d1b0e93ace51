"""One client connection: the Channels consumer, the client-event handlers, the per-connection
frame outbox and deadlines, the origin check and the session rows in the database."""
