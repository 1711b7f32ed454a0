"""Create or reset the demo's admin user; the password comes from DEMO_ADMIN_PASSWORD.

``rundemo`` runs it against each demo database: the proxy's and Demo Hub's own, so the printed
credentials open both admins (demo only).
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create or reset the demo admin user (password from DEMO_ADMIN_PASSWORD)."

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "")
        if not password:
            raise CommandError("DEMO_ADMIN_PASSWORD is not set.")
        User = get_user_model()
        admin, _ = User.objects.get_or_create(
            username="admin", defaults={"email": "admin@example.invalid"}
        )
        admin.is_staff = admin.is_superuser = True
        admin.set_password(password)
        admin.save()
