"""The names under which a service's tools are offered to the model, and how many may be offered at once.

A tool is offered as ``<service slug>__<tool name>``, cleaned up to what OpenAI accepts as a function name
(``^[a-zA-Z0-9_-]{1,64}$``: other characters become ``_``, the rest is cut at 64). Cleaning can give two
tools of one server the same name (``a.b``, ``a_b`` and ``a b`` all become ``<slug>__a_b``), and a server
may list a name twice; the model must still be offered each tool once, under a name no other tool of the
turn has, and a call to that name must run that tool. Names of different services never meet: a slug is
words joined by single underscores (apps.mcp.services), so everything up to the first ``__`` is the slug.

A name in another script is spelt in ASCII first (``anyascii``: ``查询水位`` is ``ChaXunShuiWei``, ``café`` is
``cafe``), so the model reads what the tool is (until 2026-12-07 every such character became ``_``: ``查询水位``
and ``降雨量`` were ``<slug>____`` and ``<slug>_____2``, and the model had only the descriptions to tell them
apart). A name that is ASCII keeps the name it had before (a stored conversation's calls name it): the names
of the list's ASCII tools are what they were, and each other tool's spelt name goes round them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anyascii import anyascii

SEPARATOR = "__"
MAX_NAME_LENGTH = 64
# OpenAI refuses a request that offers more tools than this.
MAX_TOOLS_PER_REQUEST = 128
# The most tools loaded from one server's list (apps.mcp.client.list_tools), the first in its order; as many as
# ``disabled_tools`` may name, so an admin can keep any of them from the model and offer the others.
MAX_TOOLS_PER_SERVICE = 500
_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class ExposedTool:
    """A tool of a server's list (``name``, the server's own) and the name the model calls it by."""

    name: str
    exposed_name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def renamed(self) -> bool:
        """Whether the model knows it by another name than ``<slug>__<name>`` (cleaned up, or with a suffix)."""
        return self.exposed_name.partition(SEPARATOR)[2] != self.name


def _clean(name: str) -> str:
    return _NOT_IN_NAMES.sub("_", name)[:MAX_NAME_LENGTH]


def _spelt(name: str) -> str:
    """``name`` in ASCII, cleaned up; an ASCII name is only cleaned."""
    return _clean(name if name.isascii() else anyascii(name))


def _first_free(name: str, taken: set[str]) -> str:
    """``name`` if no tool has it yet, else its lowest free suffix ``_2``, ``_3``...; now taken."""
    free, n = name, 2
    while free in taken:
        free, n = _suffixed(name, n), n + 1
    taken.add(free)
    return free


def _suffixed(name: str, n: int) -> str:
    suffix = f"_{n}"
    return name[: MAX_NAME_LENGTH - len(suffix)] + suffix


def exposed_tools(slug: str, tools: Iterable[dict[str, Any]]) -> list[ExposedTool]:
    """Each tool of a service's loaded list (as stored: ``name``, ``description``, ``input_schema``) once,
    the first of a name listed twice, in the server's order, each with an exposed name of its own.

    A tool whose cleaned name no earlier tool has keeps it, so names stay what they were before a clash
    was possible; each other gets the lowest suffix ``_2``, ``_3``... that no tool of the list has, in the
    order of the list (``a.b``, ``a_b``, ``a b``: ``x__a_b``, ``x__a_b_2``, ``x__a_b_3``). The names depend
    only on the slug and the list, not on which tools are disabled, so a turn's history names the same
    tools in the next turn while the server lists the same tools. A name that is not ASCII is spelt in ASCII
    (the module's docstring) and suffixed in the same way, round the names of the ASCII ones.
    """
    unique: dict[str, dict[str, Any]] = {}
    for tool in tools:
        unique.setdefault(str(tool["name"]), tool)
    prefix = f"{slug}{SEPARATOR}"
    cleaned = [_clean(prefix + name) for name in unique]
    names: list[str | None] = []
    taken: set[str] = set()
    for name in cleaned:  # the first tool of each cleaned name keeps it
        names.append(None if name in taken else name)
        taken.add(name)
    for i, name in enumerate(cleaned):
        if names[i] is None:
            names[i] = _first_free(name, taken)
    # The names above are those of before names were spelt in ASCII: ASCII tools keep theirs; the others are
    # spelt, each keeping its spelt name if no ASCII tool or earlier spelt one has it, else the lowest free suffix.
    kept = {str(names[i]) for i, name in enumerate(unique) if name.isascii()}
    for i, name in enumerate(unique):
        if not name.isascii():
            names[i] = _first_free(_spelt(prefix + name), kept)
    return [
        ExposedTool(
            name=name,
            exposed_name=str(exposed),
            description=str(tool.get("description") or ""),
            input_schema=dict(tool.get("input_schema") or {}),
        )
        for (name, tool), exposed in zip(unique.items(), names, strict=True)
    ]
