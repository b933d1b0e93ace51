# Hypercorn config object used by the comparison (python:benchproj.hypercorn_conf)
websocket_max_message_size = 1048576
