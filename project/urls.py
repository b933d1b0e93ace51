from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from realtime import demo, protocol_docs, views
from realtime.api import ResourceDetailView, ResourceListView
from realtime.ops.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/", include("accounts.urls")),
    path("api/resources/", ResourceListView.as_view(), name="resource_list"),
    path("api/resources/<int:pk>/", ResourceDetailView.as_view(), name="resource_detail"),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("ws/", views.websocket_required, name="websocket_required"),
    path("demo/", demo.demo_page, name="demo"),
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="openapi_schema"), name="swagger_ui"),
    path("docs/protocol/", protocol_docs.protocol_page, name="protocol_docs"),
    path("docs/asyncapi.json", protocol_docs.asyncapi_json, name="asyncapi_json"),
]
