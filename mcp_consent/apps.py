from django.apps import AppConfig


class MCPConsentConfig(AppConfig):
    name = "mcp_consent"
    verbose_name = "MCP consent"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
