from django.apps import AppConfig


class DemoProjectConfig(AppConfig):
    """The demo project itself, as an app only for its `rundemo` command."""

    name = "project"
    verbose_name = "mcp-consent demo"
