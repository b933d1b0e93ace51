from django.contrib import admin
from django.urls import include, path

from realtime import demo, views
from realtime.api import ResourceDetailView, ResourceListView
from realtime.metrics import metrics_view

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
]
