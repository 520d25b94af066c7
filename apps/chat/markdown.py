"""Assistant replies as HTML: Markdown rendered by Python-Markdown, then sanitized by nh3."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import markdown as md
import nh3
from django.utils.html import linebreaks
from markdown.treeprocessors import Treeprocessor

logger = logging.getLogger(__name__)

_TAGS = {
    "p", "br", "hr", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h1", "h2", "h3", "h4",
    "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "del",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}, "code": {"class"}}


_local = threading.local()


class _ImagesAsLinks(Treeprocessor):
    """An image in a reply becomes a link to it, its words its alt text (else its address).

    Images are not loaded: an address a model was led to write (by a tool result, say) could carry the
    conversation to a stranger's server as soon as the page showed it. nh3 dropped the ``img`` tags, alt text
    and all, so a reply's "![Water levels at S001](https://…)" showed nothing where the chart was meant to be.
    """

    def run(self, root: Any) -> None:
        for image in list(root.iter("img")):
            source, words = image.get("src", ""), image.get("alt") or image.get("src", "")
            image.tag, image.text = "a", words
            image.attrib.clear()
            image.set("href", source)


def _converter() -> md.Markdown:
    """This thread's converter. Building one looks its extensions up among the installed
    packages' entry points, which reads their metadata from disk: 0.7 of the 1.1 ms a reply's
    rendering took. A ``Markdown`` is not thread-safe; ``reset()`` readies it for the next text."""
    converter = getattr(_local, "converter", None)
    if converter is None:
        # nl2br: a single line break is a line break, as the reply showed while it streamed (pre-wrap) and as chat
        # products show replies, not a space joining the lines into one paragraph.
        converter = _local.converter = md.Markdown(
            extensions=["fenced_code", "tables", "sane_lists", "nl2br"], output_format="html"
        )
        # HTML in a reply is shown as text, as it was written, not passed on as tags: a model (or a tool result it
        # repeats) writing 20,000 nested <ul><li> made nh3 spend 3.5 s on every view of the reply, time growing
        # threefold with each doubling of the depth. Markdown's own nesting stops at its recursion limit.
        converter.preprocessors.deregister("html_block")
        converter.inlinePatterns.deregister("html")
        converter.treeprocessors.register(_ImagesAsLinks(converter), "images_as_links", 1)  # after the inline ones
    return converter


# Python-Markdown's inline patterns look ahead for the end of each link they may start: a reply of unclosed or
# deeply nested brackets ("[x" * 3000: 3.6 s; "[" * 20,000 + "x" + "]" * 20,000: 96 s) took seconds on every view.
# Such a text, and a very long one, is shown as text (escaped, in paragraphs), as a text Markdown fails on.
MAX_MARKDOWN_CHARS = 100_000
MAX_BRACKET_DEPTH = 16
# Each unclosed bracket or parenthesis has the patterns look through the rest of the text: at most this many
# characters looked through in all (about 0.1 s here).
MAX_LOOKAHEAD = 300_000
_FENCE = re.compile(r"`{3,}|~{3,}")


def _without_fenced_code(text: str) -> str:
    """``text`` without its fenced code blocks: from a line that starts with a fence (three or more backticks or
    tildes) to the next line that starts with the same fence, both included; a fence never closed is kept.

    Line by line, in one pass: the regular expression this was (``^(`{3,}|~{3,}).*?^\1``, multiline) backed off
    one character of a fence at a time and looked through the rest of the text for each, so a line of 10,000
    backticks took 2 s and one of 100,000 (a model told to write them) minutes, on every view of the reply.
    """
    kept: list[str] = []
    fence, block = "", []  # the open fence, and its lines so far (kept if it never closes)
    for line in text.splitlines(keepends=True):
        if fence:
            block.append(line)
            if line.startswith(fence):
                fence, block = "", []
        elif opening := _FENCE.match(line):
            fence, block = opening[0], [line]
        else:
            kept.append(line)
    return "".join(kept + block)


def _worth_rendering(text: str) -> bool:
    """Whether Markdown renders ``text`` in time: not too long, no deep or unclosed brackets outside fenced code."""
    if len(text) > MAX_MARKDOWN_CHARS:
        return False
    prose = _without_fenced_code(text) if "``" in text or "~~" in text else text
    depth = deepest = 0
    for char in prose:
        if char == "[":
            depth += 1
            deepest = max(deepest, depth)
        elif char == "]" and depth:
            depth -= 1
    unclosed = depth + max(0, prose.count("(") - prose.count(")"))
    return deepest <= MAX_BRACKET_DEPTH and unclosed * len(prose) <= MAX_LOOKAHEAD


def _markdown(text: str) -> str:
    """``text`` rendered by this thread's converter; if that fails, the text itself, escaped, in paragraphs.

    Python-Markdown parses nested blocks by recursion: about 1,000 characters of list markers
    (``"- " * 496``, which a model told to repeat something will write) exceed Python's recursion limit,
    and its parser has no nesting limit to set. A failed render leaves state that ``reset()`` does not
    clear (the block parser's stack of states: every later text on the thread rendered without its
    paragraphs), so the converter is dropped and the thread builds a new one.
    """
    if not _worth_rendering(text):
        return linebreaks(text, autoescape=True)
    converter = _converter()
    try:
        return converter.convert(text)
    except Exception as exc:  # RecursionError, or any bug of the library's on an odd text
        _local.converter = None
        logger.warning("A reply of %d characters could not be rendered as Markdown (%s): shown as plain text",
                       len(text), type(exc).__name__)  # fmt: skip
        return linebreaks(text, autoescape=True)
    finally:
        converter.reset()


def render(text: str) -> str:
    """Safe HTML for ``text``: no scripts, no event handlers, only http(s) and mailto links, each opening in a
    new tab (a link followed in the chat's own tab left the conversation, and stopped a reply being written);
    code blocks and tables take the keyboard's focus."""
    return nh3.clean(
        _markdown(text or ""),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        # A code block or table wider than the reply scrolls sideways: focusable, so the keyboard scrolls it too
        # (WCAG 2.1.1; axe's scrollable-region-focusable), as a tool panel's boxes are.
        set_tag_attribute_values={"a": {"target": "_blank"}, "pre": {"tabindex": "0"}, "table": {"tabindex": "0"}},
    )
