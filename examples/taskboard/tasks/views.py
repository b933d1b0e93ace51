"""The board page, and its tasks with the stream position to subscribe from."""

from __future__ import annotations

import realtime
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.models import Board


def board_page(request: HttpRequest, board_id: int) -> HttpResponse:
    """The page signs in with ``/api/auth/token/``; everything else it gets with the token."""
    return render(request, "tasks/board.html", {"board_id": board_id})


class BoardTasks(APIView):
    """``GET /boards/ID/tasks/`` (JWT): the tasks, and ``position``, read first: subscribing
    from there replays whatever was saved after this snapshot, so nothing falls in between."""

    def get(self, request: Request, board_id: int) -> Response:
        board = get_object_or_404(Board, pk=board_id, members=request.user)
        offset, epoch = realtime.position(board.stream)
        tasks = [task.as_event() for task in board.tasks.all()]
        return Response({"board": board.name, "tasks": tasks, "position": {"offset": offset, "epoch": epoch}})
