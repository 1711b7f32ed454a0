import logging

from django.apps import AppConfig


class MCPConsentConfig(AppConfig):
    name = "mcp_consent"
    verbose_name = "MCP consent"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at module level: Django's documented place to register checks
        # (the app registry is ready, and importing mcp_consent.apps stays side-effect free).
        from . import checks  # noqa: F401  (registers the system checks)

        # BCP-18 / UP-07: oauthlib logs authorization codes and access/refresh tokens at DEBUG
        # ("Saving grant %r", "Issuing new token to client id %r (%r), %r."). A filter on each
        # of its loggers drops those records, whatever level LOGGING (or anyone) sets.
        for name in [
            n
            for n in logging.Logger.manager.loggerDict
            if n == "oauthlib" or n.startswith("oauthlib.")
        ]:
            logger = logging.getLogger(name)
            if drop_oauthlib_debug not in logger.filters:
                logger.addFilter(drop_oauthlib_debug)


def drop_oauthlib_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG
