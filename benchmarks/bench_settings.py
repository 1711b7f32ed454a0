"""The demo's settings for the benchmarks: the same deployment, minus the per-IP limits.

Every request of the bench comes from 127.0.0.1, so the per-address limits (ABUSE-01,
DCR-02) would answer 429 within seconds and the never-used-client budget (ABUSE-03, 200
per address) after a few seconds of registrations; FastMCP has neither. The budget's
bookkeeping still runs on every registration (its counts are part of the figure): only its
limits are raised out of reach. Nothing else changes.
"""

from project.settings import *  # noqa: F403
from project.settings import MCP_CONSENT

MCP_CONSENT = {
    **MCP_CONSENT,
    "RATE_LIMITS": {},
    "MAX_UNUSED_DCR_CLIENTS": 10**9,
    "MAX_UNUSED_CLIENTS_PER_ADDRESS": 10**9,
}
# W004 (registration without a rate limit) is this file's point; it would print on every
# `migrate` of the bench between the tables.
SILENCED_SYSTEM_CHECKS = ["mcp_consent.W004"]
