"""The operator's lists in Chromium at 1280 px (issue 9 item 4): every column in sight.

The audit list used to push its client, consent and IP columns out of the visible area (the
app sidebar and the filter column left the table ~630 px). Each column header must end
inside the window and the results must not scroll sideways.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser

from tests.browser_client import pkce_pair

from .conftest import TIMEOUT_MS, Listener, Sites
from .pages import authorize_url, complete_flow, register_client, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 1280


def test_admin_lists_fit_1280_px(
    sites: Sites, browser: Browser, page, client_listener: Listener
) -> None:  # type: ignore[no-untyped-def]
    # A CIMD-like client_id and a long name: the widest cells an operator meets.
    client_id, redirect_uri = register_client(
        "Claude Code (Anthropic) — long display name", f"{client_listener.origin}/cb"
    )
    complete_flow(
        page,
        sites,
        client_listener,
        authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="a"),
    )
    get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-for-the-test")
    operator = browser.new_context(viewport={"width": WIDTH, "height": 900})
    operator.set_default_timeout(TIMEOUT_MS)
    try:
        admin = operator.new_page()
        admin.goto(f"{sites.proxy}/admin/")
        admin.fill("#id_username", "admin")
        admin.fill("#id_password", "pw-for-the-test")
        admin.locator("input[type=submit]").click()
        admin.wait_for_url(f"{sites.proxy}/admin/")
        for model, columns in (
            ("mcp_consent/auditevent", ["client", "consent", "ip_address"]),
            ("mcp_consent/consent", ["client_id", "redirect_host", "status"]),
            ("mcp_consent/mcpclient", ["client_id", "redirect_hosts", "disabled_at"]),
        ):
            response = admin.goto(f"{sites.proxy}/admin/{model}/")
            assert response is not None
            assert response.status == 200
            assert admin.locator("#result_list tbody tr").count() >= 1, model
            for column in columns:
                box = admin.locator(f"#result_list th.column-{column}").bounding_box()
                assert box is not None, (model, column)
                assert box["x"] + box["width"] <= WIDTH, (model, column, box)
            overflow = admin.evaluate(
                "() => { const r = document.querySelector('.results');"
                " return r.scrollWidth - r.clientWidth; }"
            )
            assert overflow <= 0, (model, overflow)
        screenshot(admin, "16-admin-clients-1280")
    finally:
        operator.close()
