from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from realtime import demo, protocol_docs

urlpatterns = [
    path("admin/", admin.site.urls),
    # The service's endpoints (api/auth/, api/resources/, api/server/, probes, metrics, ws/),
    # included the way an embedding project includes them.
    path("", include("realtime.urls")),
    path("demo/", demo.demo_page, name="demo"),
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="openapi_schema"), name="swagger_ui"),
    path("docs/protocol/", protocol_docs.protocol_page, name="protocol_docs"),
    path("docs/asyncapi.json", protocol_docs.asyncapi_json, name="asyncapi_json"),
]
