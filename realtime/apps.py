from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Collect every app's stream namespaces and client events, then freeze both registries
        (issue 16): the contract's events are declared by the handlers module, each app's own
        in its ``realtime_streams.py`` / ``realtime_events.py``."""
        from django.utils.module_loading import autodiscover_modules

        from realtime import client_events, namespaces
        from realtime.connection import (
            handlers,  # noqa: F401  (declares the contract's events)
            presence_handlers,  # noqa: F401  (stream.presence, stream.signal)
        )

        autodiscover_modules("realtime_streams", "realtime_events")
        namespaces.freeze()
        client_events.registry.freeze()
