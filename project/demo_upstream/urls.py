"""URLs of the demo upstream. The project mounts them at ``demo-upstream/`` (GitHub-like paths)."""

from django.urls import path

from . import views

app_name = "demo_upstream"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("login/oauth/authorize", views.authorize, name="authorize"),
    path("login/oauth/access_token", views.access_token, name="access_token"),
    path("user", views.user, name="user"),
    path("revoke", views.revoke, name="revoke"),
    path("api/items", views.items, name="items"),
    path("settings/applications/forget", views.forget_consent, name="forget_consent"),
]
