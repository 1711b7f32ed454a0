"""The demo's settings for the benchmarks: the same deployment, minus the per-IP rate limits.

Every request of the bench comes from 127.0.0.1, so the per-address limits (ABUSE-01,
DCR-02) would answer 429 within seconds; FastMCP has none by default. Nothing else changes.
"""

from project.settings import *  # noqa: F403
from project.settings import MCP_CONSENT

MCP_CONSENT = {**MCP_CONSENT, "RATE_LIMITS": {}, "MAX_UNUSED_DCR_CLIENTS": 10**9}
