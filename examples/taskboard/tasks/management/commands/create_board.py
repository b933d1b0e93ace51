"""``manage.py create_board NAME --member alice --member bob``: prints the new board's id."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.models import Board


class Command(BaseCommand):
    help = "Create a task board with the given members."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--member", action="append", default=[], help="a username (repeat for more)")

    def handle(self, *args: Any, **options: Any) -> None:
        users = list(get_user_model().objects.filter(username__in=options["member"]))
        missing = set(options["member"]) - {user.get_username() for user in users}
        if missing:
            raise CommandError(f"no such user: {', '.join(sorted(missing))}")
        board = Board.objects.create(name=options["name"])
        board.members.set(users)
        self.stdout.write(str(board.pk))
