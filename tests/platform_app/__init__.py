"""A tiny app of the tests (issue 16): its own stream namespaces and client events, declared
in ``realtime_streams.py`` exactly as a team's app would. Installed by tests/settings.py only."""
