"""Messages kept in every language: an error stored by one request is read in the language of each reader.

A message HydroNet stores for later (a failed turn's error, an MCP service's last test error) is built by
code that chooses among its own gettext strings and nests one in another ("The model server could not be
reached: Nothing answered at this address…"). Such a message travels as ``Words``, the function that builds it
in the active language; when it is stored it is built once in each of ``settings.LANGUAGES``
(``in_each_language``) and kept beside the text in the storing request's language, and it is shown
through ``in_reader_language``. Words another server sent, quoted inside ours, stay as they were sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.conf import settings
from django.utils import translation

# A message built in the active language each time it is called.
type Words = Callable[[], str]


def words_of(message: str | Words) -> Words:
    """``message`` as Words: text already written in one language is that text in every one."""
    if callable(message):
        return message
    return lambda: message


def in_each_language(words: Words) -> dict[str, str]:
    """``words`` as each of ``settings.LANGUAGES`` says them: ``{language code: text}``."""
    texts: dict[str, str] = {}
    for code, _name in settings.LANGUAGES:
        with translation.override(code):
            texts[code] = words()
    return texts


def for_operators(words: Words) -> str:
    """``words`` in English, the language of HydroNet's logs: an operator reads every line in one language,
    whichever member's request wrote it."""
    with translation.override("en"):
        return words()


def in_reader_language(texts: Mapping[str, str] | None, stored: str) -> str:
    """The text of ``texts`` in the active language, else ``stored``: a row stored before its translations were
    kept (``texts`` is NULL), or in a language added since."""
    if not texts:
        return stored
    return texts.get(translation.get_language() or "", stored)
