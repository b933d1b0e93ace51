"""User text in, plain text out: markup removed, visible text kept, plain text untouched (section 4).

The HTML tree builder's cost grows with the square of the nesting depth, so the work is
bounded twice: a pass whose text opens more than :data:`MAX_MARKUP_TAGS` tags is refused,
and :func:`text_sanitize_async` runs text longer than :data:`INLINE_MAX_CHARS` that holds
markup on one thread of its own (nh3 releases the GIL), never on the event loop and never
on more than one core.
"""

from __future__ import annotations

import asyncio
import html
import re
from concurrent.futures import ThreadPoolExecutor

import nh3

from realtime.protocol.errors import ValidationFailed

_MAX_PASSES = 8
# Tags (``<`` opening a tag, comment or declaration) one pass may hold: 1000 nested ``<div>``
# cost about 3 ms, so a 64 KB text at every level of escaping stays near 20 ms of one thread.
MAX_MARKUP_TAGS = 1000
# Up to this many characters the worst markup costs well under a millisecond: sanitized inline.
INLINE_MAX_CHARS = 2048
_MARKUP = re.compile(r"<[A-Za-z/!?]")
# Elements whose content is code or styling, not visible text: dropped whole.
_DROP_WITH_CONTENT = {"script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "math"}

_executor: ThreadPoolExecutor | None = None


def _too_much_markup(text: str) -> bool:
    # str.count is one C loop; the regex count runs only when there are many "<" at all.
    return text.count("<") > MAX_MARKUP_TAGS and len(_MARKUP.findall(text)) > MAX_MARKUP_TAGS


def text_sanitize(text: str) -> str:
    """Remove HTML markup and keep its visible text.

    Text in which no ``<`` opens a tag, comment or declaration (the HTML tokenizer's rule:
    ``<`` followed by a letter, ``/``, ``!`` or ``?``) holds no markup and is returned exactly
    as sent (``Tom & Jerry``, ``a &amp; b``, ``2 < 3``, line endings included). Otherwise
    nh3 (ammonia) parses it as HTML with no allowed tags, and the entities it produces are
    turned back into characters, because clients render text as text, never as HTML. As in
    a browser, ``a<b then c`` is markup: ``<b then c`` is an unfinished tag and is dropped.

    Raises :class:`ValidationFailed` (``text``: ``too much markup``) when one pass would
    parse more than :data:`MAX_MARKUP_TAGS` tags.
    """
    # Unescaping can assemble new markup ("<<b>script>" -> "<script>"), so repeat until
    # the text is stable: the result never parses as HTML with elements in it.
    for _ in range(_MAX_PASSES):
        if _MARKUP.search(text) is None:
            return text
        if _too_much_markup(text):
            raise ValidationFailed(
                f"data.text: more than {MAX_MARKUP_TAGS} tags of markup", fields={"text": "too much markup"}
            )
        cleaned = html.unescape(nh3.clean(text, tags=set(), clean_content_tags=_DROP_WITH_CONTENT, strip_comments=True))
        if cleaned == text:
            return text
        text = cleaned
    return text.replace("<", "")


def _sanitizer() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        # One thread: however many clients send markup at once, sanitizing takes at most one core.
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sanitize")
    return _executor


async def text_sanitize_async(text: str) -> str:
    """:func:`text_sanitize`, off the event loop when the text is long and holds markup."""
    if len(text) <= INLINE_MAX_CHARS or _MARKUP.search(text) is None:
        return text_sanitize(text)
    return await asyncio.get_running_loop().run_in_executor(_sanitizer(), text_sanitize, text)
