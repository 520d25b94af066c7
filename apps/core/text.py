"""Text: what the short text a tenant names things with (titles, service and provider names) may hold, and text
from another server made whole."""

from __future__ import annotations

import re
import unicodedata

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (Unicode category Cc: line breaks, tabs, NUL, ESC...)."""
    return any(unicodedata.category(char) == "Cc" for char in text)


def one_line(text: str) -> str:
    """``text`` as one line: runs of whitespace (line breaks and tabs too) as one space, other control
    characters left out."""
    return "".join(char for char in " ".join(text.split()) if unicodedata.category(char) != "Cc")


def whole_characters(text: str) -> str:
    """``text`` with each UTF-16 surrogate pair as the character it stands for, and each surrogate alone as U+FFFD.

    ``json.loads`` keeps ``"\\ud800"`` as a lone surrogate, which no UTF-8 encoder takes: the
    response, the stored message and the event that would carry it all fail.
    """
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
