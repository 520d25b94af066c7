"""Short text a tenant names things with (titles, service and provider names): what it may hold."""

from __future__ import annotations

import unicodedata


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (Unicode category Cc: line breaks, tabs, NUL, ESC...)."""
    return any(unicodedata.category(char) == "Cc" for char in text)


def one_line(text: str) -> str:
    """``text`` as one line: runs of whitespace (line breaks and tabs too) as one space, other control
    characters left out."""
    return "".join(char for char in " ".join(text.split()) if unicodedata.category(char) != "Cc")
