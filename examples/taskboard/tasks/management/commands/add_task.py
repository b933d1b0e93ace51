"""``manage.py add_task BOARD_ID TITLE``: a task saved from Django code, outside the server.

The browsers showing the board get it live: through Redis when ``REDIS_URL`` is set, else
from the log, which every server reads within about a second."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.models import Board, Task


class Command(BaseCommand):
    help = "Add a task to a board (published to its board:ID stream)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("board", type=int)
        parser.add_argument("title")

    def handle(self, *args: Any, **options: Any) -> None:
        board = Board.objects.filter(pk=options["board"]).first()
        if board is None:
            raise CommandError(f"board {options['board']} does not exist")
        task = Task.objects.create(board=board, title=options["title"])
        self.stdout.write(str(task.pk))
