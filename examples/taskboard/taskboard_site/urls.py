from django.urls import include, path

from tasks import views

urlpatterns = [
    # The service's endpoints: api/auth/ (login), api/resources/, api/server/, healthz, readyz, metrics, ws/.
    path("", include("realtime.urls")),
    path("boards/<int:board_id>/", views.board_page, name="board"),
    path("boards/<int:board_id>/tasks/", views.BoardTasks.as_view(), name="board_tasks"),
]
