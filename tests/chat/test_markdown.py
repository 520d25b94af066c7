"""Replies rendered as sanitized HTML: each thread reuses one converter, and no text leaks into the next."""

from __future__ import annotations

import threading
import time

import pytest

from apps.chat.markdown import render


def test_links_defined_in_one_reply_do_not_resolve_in_the_next() -> None:
    first = render('[docs]: https://example.com/docs "Docs"\n\nSee the docs.')
    assert "example.com" not in first
    second = render("See [the manual][docs].")
    assert "<a" not in second
    assert "example.com" not in second


def test_a_render_that_fails_shows_the_text_and_leaves_nothing_behind(caplog: pytest.LogCaptureFixture) -> None:
    from markdown.treeprocessors import Treeprocessor

    from apps.chat.markdown import _converter

    class Boom(Treeprocessor):
        def run(self, root: object) -> None:
            raise RuntimeError("boom")

    converter = _converter()
    converter.treeprocessors.register(Boom(converter), "boom", 0)  # runs after the references were read
    try:
        shown = render("[docs]: https://example.com/docs\n\nSee the <b>docs</b>.")
    finally:
        converter.treeprocessors.deregister("boom")
    assert shown == "<p>[docs]: https://example.com/docs</p>\n\n<p>See the &lt;b&gt;docs&lt;/b&gt;.</p>"
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "example.com" not in render("See [the manual][docs].")
    assert _converter() is not converter  # built anew: nothing of the failed text is kept


NORMAL = "hello **x**\n\n- a"
NORMAL_HTML = "<p>hello <strong>x</strong></p>\n<ul>\n<li>a</li>\n</ul>"


@pytest.mark.parametrize("text", ["- " * 2000 + "x <script>", "1. " * 2000 + "a"])
def test_a_text_nested_deeper_than_the_parser_recurses_is_shown_as_text(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Python-Markdown parses nested blocks by recursion and has no nesting limit: past Python's recursion limit
    the render raised RecursionError (a 500 on every view of the conversation), and left the thread's converter
    rendering every later text without its paragraphs and emphasis."""
    shown = render(text + "\nnext line")
    assert shown.startswith("<p>" + text[:10])
    assert shown.endswith("<br>next line</p>")
    assert "<script" not in shown
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "RecursionError" in caplog.records[0].getMessage()
    assert render(NORMAL) == NORMAL_HTML


@pytest.mark.parametrize("text", ["- " * 496 + "x", "1. " * 496 + "a"])
def test_a_thousand_characters_of_list_markers_never_raise(text: str) -> None:
    """Rendered as lists or as text, depending on how deep the caller's stack is: never an exception, and the
    converter stays whole."""
    assert "<script" not in render(text + "<script>")
    assert render(NORMAL) == NORMAL_HTML


def test_html_in_a_reply_is_shown_as_written() -> None:
    """Not passed on as tags: deeply nested HTML made the sanitizer take seconds on every view of the reply."""
    shown = render("a <b>bold</b> <script>x</script> &copy;\n\n<div>\n<ul><li>x</li></ul>\n</div>\n\n`<i>`")
    assert shown == (
        "<p>a &lt;b&gt;bold&lt;/b&gt; &lt;script&gt;x&lt;/script&gt; ©</p>\n"
        "<p>&lt;div&gt;<br>\n&lt;ul&gt;&lt;li&gt;x&lt;/li&gt;&lt;/ul&gt;<br>\n&lt;/div&gt;</p>\n<p><code>&lt;i&gt;</code></p>"
    )
    deep = render("<ul><li>" * 20_000)
    assert "<li>" not in deep
    assert deep.startswith("<p>&lt;ul&gt;&lt;li&gt;")


def test_sanitized_and_the_same_on_every_thread() -> None:
    text = "**bold** <script>alert(1)</script> [x](javascript:alert(1))\n\n```python\nprint(1)\n```"
    expected = render(text)
    assert "<strong>bold</strong>" in expected
    assert "<script" not in expected
    assert "javascript:" not in expected
    assert '<code class="language-python">' in expected
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(render(text))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 8


@pytest.mark.parametrize(
    "text",
    ["[x" * 3000, "[" * 20_000 + "x" + "]" * 20_000, "[a](" * 5000, "![a](" * 1000, "a " * 60_000],
    ids=["unclosed", "nested", "unclosed-links", "unclosed-images", "long"],
)
def test_a_text_markdown_would_take_seconds_on_is_shown_as_text_without_parsing(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python-Markdown's link patterns look ahead for each bracket's end: "[x" * 3000 took 3.6 s and 40 kB of nested
    brackets 96 s, on every view of the reply. Such texts are not given to it."""
    from apps.chat import markdown

    given: list[str] = []
    monkeypatch.setattr(markdown._converter(), "convert", given.append)
    shown = render(text)
    assert given == []
    assert shown.startswith("<p>" + text[:8].replace("<", "&lt;"))
    assert "<a" not in shown


def test_brackets_in_fenced_code_and_closed_links_are_rendered() -> None:
    text = "See [the docs](https://example.com) [1] [2].\n\n```json\n" + "[" * 40 + "]" * 40 + "\n```"
    shown = render(text)
    assert '<a href="https://example.com"' in shown
    assert '<pre tabindex="0"><code' in shown


@pytest.mark.parametrize(
    "text",
    ["`" * 100_000, "~" * 100_000, ("`" * 1000 + "\n") * 99, "```\n" + ("`" * 999 + "\n") * 99 + "[x" * 10],
    ids=["backticks", "tildes", "fences", "unclosed-fence"],
)
def test_a_run_of_fence_characters_is_looked_through_once(text: str) -> None:
    """Finding the fenced code (left out of the bracket count) backed off one character of a fence at a time and
    looked through the rest of the text for each: a line of 10,000 backticks took 2 s and one of 100,000 (a model
    told to write them) minutes, on every view of the reply."""
    started = time.perf_counter()
    render(text)
    assert time.perf_counter() - started < 1


def test_fenced_code_ends_at_its_own_fence_and_one_never_closed_counts() -> None:
    from apps.chat.markdown import _without_fenced_code

    assert _without_fenced_code("a\n````\n[[\n```\n]]\n````\nb\n~~~\nc [") == "a\nb\n~~~\nc ["


@pytest.mark.parametrize(
    ("text", "html"),
    [("Line one\nLine two\nLine three", "<p>Line one<br>\nLine two<br>\nLine three</p>"),
     ("Levels:\n\n- S001\n  rising\n- S002", "<p>Levels:</p>\n<ul>\n<li>S001<br>\n  rising</li>\n<li>S002</li>\n</ul>"),
     ("a\n\nb", "<p>a</p>\n<p>b</p>"),
     ("```\nx = 1\ny = 2\n```", '<pre tabindex="0"><code>x = 1\ny = 2\n</code></pre>'),
     ("| a | b |\n|---|---|\n| 1 | 2 |", '<table tabindex="0">\n<thead>\n<tr>\n<th>a</th>\n<th>b</th>\n</tr>\n'
                                         "</thead>\n<tbody>\n<tr>\n<td>1</td>\n<td>2</td>\n</tr>\n</tbody>\n</table>"),
     ("<b>x</b>\n<script>y</script>", "<p>&lt;b&gt;x&lt;/b&gt;<br>\n&lt;script&gt;y&lt;/script&gt;</p>")],
)  # fmt: skip
def test_a_single_line_break_stays_a_line_break(text: str, html: str) -> None:
    """As the reply showed while it streamed (pre-wrap): the demo's three-line answer jumped into one paragraph
    when it finished, and after a reload. Code, tables and lists read as before; HTML is still text."""
    assert render(text) == html


def test_links_open_in_a_new_tab() -> None:
    """A link followed in the chat's own tab left the conversation (and stopped a reply being written)."""
    shown = render("See [the manual](https://example.com/manual) or mail <ops@example.com>.")
    link = '<a href="https://example.com/manual" target="_blank" rel="noopener noreferrer nofollow">'
    assert link + "the manual</a>" in shown
    assert shown.count('target="_blank"') == 2


def test_an_image_is_a_link_to_it_named_by_its_alt_text() -> None:
    """Images are not loaded (the address could carry the conversation away), and nh3 dropped them whole: a reply's
    chart showed nothing at all, not even its alt text."""
    shown = render("Levels: ![Water levels at S001](https://example.com/s001.png) ![](https://example.com/x.png)")
    assert "<img" not in shown
    link = '<a href="https://example.com/s001.png" target="_blank" rel="noopener noreferrer nofollow">'
    assert link + "Water levels at S001</a>" in shown
    assert ">https://example.com/x.png</a>" in shown  # no alt text: the address


@pytest.mark.parametrize("source", ["javascript:alert(1)", "data:image/svg+xml,<svg onload=alert(1)>"])
def test_an_image_of_another_scheme_is_words_without_a_link(source: str) -> None:
    shown = render(f"![chart]({source})")
    assert "href" not in shown
    assert "alert" not in shown
    assert ">chart</a>" in shown


def test_code_blocks_and_tables_take_the_keyboards_focus() -> None:
    """Both scroll sideways when wider than the reply: without a tab stop, a keyboard could not reach what is
    past the edge (axe's scrollable-region-focusable)."""
    html = render("```\nprint('level')\n```\n\n| station | level |\n|---|---|\n| S001 | 2.31 |")
    assert '<pre tabindex="0"><code>' in html
    assert '<table tabindex="0">' in html
