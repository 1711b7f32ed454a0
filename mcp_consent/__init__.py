"""mcp-consent: the confused-deputy-proof OAuth 2.1 authorization server for MCP proxy servers."""

__version__ = "0.1.0"
