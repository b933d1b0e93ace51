from django.urls import path

from accounts.views import LoginView, LogoutView, RefreshView

urlpatterns = [
    path("token/", LoginView.as_view(), name="token_obtain"),
    path("token/refresh/", RefreshView.as_view(), name="token_refresh"),
    path("logout/", LogoutView.as_view(), name="logout"),
]
