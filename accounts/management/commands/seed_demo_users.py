"""Create the demo users for local development; their passwords are printed once, at creation."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User

DEMO_USERS = (("alice", False), ("bob", False), ("admin", True))


class Command(BaseCommand):
    help = "Create demo users alice, bob (regular) and admin (staff) for development."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            raise CommandError("demo users are for development only (SQLite or DJANGO_DEBUG=1)")
        created = []
        for username, staff in DEMO_USERS:
            if User.objects.filter(username=username).exists():
                continue
            password = secrets.token_urlsafe(12)
            User.objects.create_user(username=username, password=password, is_staff=staff, is_superuser=staff)
            created.append((username, password, staff))
        if not created:
            self.stdout.write("demo users exist already (their passwords were printed when created)")
            return
        self.stdout.write("demo users (development only; shown this once):")
        for username, password, staff in created:
            role = "staff" if staff else "user"
            self.stdout.write(f"  {username:<6} {password}  ({role})")
