"""Demo accounts and items. Used by the data migration; idempotent, so tests that flush the
database (transactional_db / live_server) can re-seed with ``seed_demo_data()``."""

from __future__ import annotations

from django.contrib.auth.hashers import make_password

DEMO_PASSWORD = "demo"  # noqa: S105 -- a published demo credential, shown on the login page

DEMO_ACCOUNTS = [
    {
        "login": "octocat",
        "name": "The Octocat",
        "email": "octocat@demohub.example",
        "items": [
            "Fix the flux capacitor",
            "Write the quarterly report",
            "Plan the team offsite",
        ],
    },
    {
        "login": "hubot",
        "name": "Hubot",
        "email": "hubot@demohub.example",
        "items": [
            "Deploy the chat bot",
            "Rotate the on-call schedule",
        ],
    },
]


def seed_demo_data(apps=None) -> None:
    """Create the demo accounts and their items if missing (``apps``: a migration's registry)."""
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    account_model = apps.get_model("demo_upstream", "Account")
    item_model = apps.get_model("demo_upstream", "Item")
    for spec in DEMO_ACCOUNTS:
        account, created = account_model.objects.get_or_create(
            login=spec["login"],
            defaults={
                "name": spec["name"],
                "email": spec["email"],
                "password": make_password(DEMO_PASSWORD),
            },
        )
        if created or not item_model.objects.filter(account=account).exists():
            item_model.objects.bulk_create(
                item_model(account=account, title=title) for title in spec["items"]
            )
