"""The service's HTTP endpoints, for a project's root URLconf: ``path("", include("realtime.urls"))``.

- ``api/auth/``: JWT login, refresh and logout (``accounts``);
- ``api/resources/``: the versioned resources; ``api/server/``: the server HTTP API;
- ``healthz``, ``readyz``, ``metrics``: the operators' probes and Prometheus metrics;
- ``ws/``: a plain HTTP request to the WebSocket endpoint gets 426 with a hint.

The demo page, the admin and the OpenAPI/AsyncAPI documents stay in the project's own URLconf.
"""

from django.urls import include, path

from realtime import views
from realtime.api import ResourceDetailView, ResourceListView
from realtime.ops.metrics import metrics_view

urlpatterns = [
    path("api/auth/", include("accounts.urls")),
    path("api/resources/", ResourceListView.as_view(), name="resource_list"),
    path("api/resources/<int:pk>/", ResourceDetailView.as_view(), name="resource_detail"),
    path("api/server/", include("realtime.server_api")),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("ws/", views.websocket_required, name="websocket_required"),
]
