"""Replies rendered as sanitized HTML: each thread reuses one converter, and no text leaks into the next."""

from __future__ import annotations

import threading

import pytest

from apps.chat.markdown import render


def test_links_defined_in_one_reply_do_not_resolve_in_the_next() -> None:
    first = render('[docs]: https://example.com/docs "Docs"\n\nSee the docs.')
    assert "example.com" not in first
    second = render("See [the manual][docs].")
    assert "<a" not in second
    assert "example.com" not in second


def test_a_render_that_fails_leaves_nothing_behind() -> None:
    from markdown.treeprocessors import Treeprocessor

    from apps.chat.markdown import _converter

    class Boom(Treeprocessor):
        def run(self, root: object) -> None:
            raise RuntimeError("boom")

    converter = _converter()
    converter.treeprocessors.register(Boom(converter), "boom", 0)  # runs after the references were read
    try:
        with pytest.raises(RuntimeError):
            render("[docs]: https://example.com/docs\n\nSee the docs.")
    finally:
        converter.treeprocessors.deregister("boom")
    assert "example.com" not in render("See [the manual][docs].")


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
