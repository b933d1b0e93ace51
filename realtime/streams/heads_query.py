"""The committed heads of many streams in one query: how a hub learns what the broker lost.

``realtime_stream.head`` is advanced in the publishing transaction, so a committed head
``h`` means every offset up to ``h`` is committed and readable (publishers of one stream
are serialized by that row's lock). A hub that asks for the heads of the streams it
follows twice a second therefore learns of every event the broker dropped, delayed or was
never given, at the cost of one indexed query per interval for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from realtime.models import Stream

# Names per query: far below every database's bound on parameters, and one index probe each.
CHUNK = 500


def stream_heads(names: Iterable[str]) -> dict[str, int]:
    """``{name: head}`` of the named streams that exist (synchronous: the database thread)."""
    wanted = list(names)
    heads: dict[str, int] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        heads.update(Stream.objects.filter(name__in=chunk).values_list("name", "head"))
    return heads
