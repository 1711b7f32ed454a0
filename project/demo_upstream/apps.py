from django.apps import AppConfig


class DemoUpstreamConfig(AppConfig):
    name = "project.demo_upstream"
    label = "demo_upstream"
    verbose_name = "Demo upstream (Demo Hub)"
    default_auto_field = "django.db.models.BigAutoField"
