"""A small GitHub-like OAuth 2.0 provider ("Demo Hub") standing in for the third-party upstream.

It knows ONE static client (the MCP proxy) and, like GitHub, remembers consent for that client
in a cookie, so the next authorization for the static client skips its consent screen: the
precondition of the confused-deputy attack that mcp_consent defends against.
"""
