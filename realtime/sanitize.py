"""User text in, plain text out: markup removed, visible text kept, plain text untouched (section 4)."""

from __future__ import annotations

import html
import re

import nh3

# Elements whose content is code or styling, not visible text: dropped whole.
_MAX_PASSES = 8
_MARKUP = re.compile(r"<[A-Za-z/!?]")
_DROP_WITH_CONTENT = {"script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "math"}


def text_sanitize(text: str) -> str:
    """Remove HTML markup and keep its visible text.

    Text in which no ``<`` opens a tag, comment or declaration (the HTML tokenizer's rule:
    ``<`` followed by a letter, ``/``, ``!`` or ``?``) holds no markup and is returned exactly
    as sent (``Tom & Jerry``, ``a &amp; b``, ``2 < 3``, line endings included). Otherwise
    nh3 (ammonia) parses it as HTML with no allowed tags, and the entities it produces are
    turned back into characters, because clients render text as text, never as HTML. As in
    a browser, ``a<b then c`` is markup: ``<b then c`` is an unfinished tag and is dropped.
    """
    # Unescaping can assemble new markup ("<<b>script>" -> "<script>"), so repeat until
    # the text is stable: the result never parses as HTML with elements in it.
    for _ in range(_MAX_PASSES):
        if _MARKUP.search(text) is None:
            return text
        cleaned = html.unescape(nh3.clean(text, tags=set(), clean_content_tags=_DROP_WITH_CONTENT, strip_comments=True))
        if cleaned == text:
            return text
        text = cleaned
    return text.replace("<", "")
