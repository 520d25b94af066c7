"""The request body parser of every DRF endpoint."""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Iterator
from typing import IO, Any

from django.conf import settings
from django.utils.http import parse_header_parameters
from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError, UnsupportedMediaType, ValidationError
from rest_framework.settings import api_settings
from rest_framework.utils import json
from rest_framework.validators import ProhibitSurrogateCharactersValidator

# A JSON string escape of a UTF-16 surrogate: the only way a body decoded as UTF-8 (as every body is) can carry
# one (a pair of them decodes to one character; a lone one stays a surrogate, which no text can be encoded with).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

#: The deepest a body's arrays and objects may nest, the body itself being the first level. A tool's JSON
#: schema takes two levels a nested property, and no client needs fifty of those; what the API does with a
#: body afterwards (copies, the model server's request) recurses about once a level, as Python's own parser
#: does: it gives up at about a thousand levels, with a RecursionError.
MAX_DEPTH = 100


def _codec(charset: str) -> str | None:
    """Python's name of the codec ``charset`` names, or None if it names none."""
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with bodies nested deeper than ``MAX_DEPTH`` refused in words, a body of ``null``
    refused in the request's language (DRF's serializers answer it in English only), and values that cannot
    be sent on refused wherever they are (below).

    A lone surrogate (``"\\ud800"``) and a number beyond a float's range (``1e400``, which Python reads as
    infinity) are JSON that Python reads but cannot write again: fields checked as text refuse the first
    (DRF's ``CharField``), but free-form JSON (``/v1``'s message contents, tool schemas) went on to the model
    server's request and failed there, as a 502. Both are refused here, for every field, with the field's path.

    A compressed body (``Content-Encoding: gzip``, which no server is bound to take) is a 415 saying so: it was
    read as it came, and its bytes were "not valid JSON", which sent the caller looking for a fault in its JSON.

    JSON is UTF-8 (RFC 8259, section 8.1): a body that declares another charset is a 415. Decoded as it
    declares, UTF-7's ``+2AA-`` is a lone surrogate without an escape that the check for them looks for, and
    a charset that is not text at all (``bz2_codec``) would decompress a small body into a large one.
    """

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        # The charset as declared: Django's ``request.encoding`` takes one it does not know (charset=foo) for UTF-8.
        charset = parse_header_parameters(media_type or "")[1].get("charset") or settings.DEFAULT_CHARSET
        request = (parser_context or {}).get("request")
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip() if request is not None else ""
        if encoding and encoding.lower() != "identity":  # read as it came, gzip's bytes were "not valid JSON"
            message = _("Send the body uncompressed: Content-Encoding “%(encoding)s” is not accepted.")
            raise UnsupportedMediaType(media_type or self.media_type, detail=message % {"encoding": encoding[:40]})
        if _codec(charset) != "utf-8":
            message = _("Send JSON in UTF-8 (charset=utf-8, or no charset): “%(charset)s” is not accepted.")
            raise UnsupportedMediaType(media_type or self.media_type, detail=message % {"charset": charset})
        try:
            text = stream.read().decode("utf-8")
            data = json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except RecursionError as exc:  # Python's parser: far deeper than MAX_DEPTH
            raise _refused((), _too_deep()) from exc
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if data is None:  # valid JSON, so not a ParseError's "not valid JSON"
            raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [_("Send a JSON object, not null.")]})
        problem = _unsendable(data, strings=_SURROGATE_ESCAPE.search(text) is not None)
        if problem is not None:
            raise _refused(*problem)
        return data


def _too_deep() -> str:
    return _("The JSON is nested too deeply: at most %(levels)d levels of arrays and objects.") % {"levels": MAX_DEPTH}


def _refused(path: tuple[str, ...], message: str) -> ValidationError:
    """The 400 for a problem at ``path`` in the body; at its top, a problem of the whole body."""
    details: Any = [message]
    for key in reversed(path or (api_settings.NON_FIELD_ERRORS_KEY,)):
        details = {key: details}
    return ValidationError(details)


def _unsendable(data: Any, *, strings: bool) -> tuple[tuple[str, ...], str] | None:
    """The path to the first value that cannot be written as JSON again, and why, or the whole body's path
    (``()``) if it nests deeper than ``MAX_DEPTH``; ``strings``: look at text too.

    A loop over a stack of the containers it is in, not a recursion: a body's depth is not bounded yet
    when it runs, and no body may raise a RecursionError here."""
    problem = _value_problem(data, strings=strings)
    if problem is not None:
        return (), problem
    path: list[str] = []
    open_members: list[Iterator[tuple[Any, Any]]] = [_members(data)] if isinstance(data, dict | list) else []
    while open_members:
        for key, item in open_members[-1]:
            if strings and isinstance(key, str) and (problem := _value_problem(key, strings=True)) is not None:
                return tuple(path), problem  # an object's key: at the object
            if isinstance(item, float | str) and (problem := _value_problem(item, strings=strings)) is not None:
                return (*path, str(key)), problem
            if isinstance(item, dict | list):
                if len(open_members) >= MAX_DEPTH:
                    return (), _too_deep()
                path.append(str(key))
                open_members.append(_members(item))
                break
        else:  # every member of the innermost container is checked
            open_members.pop()
            if path:
                path.pop()
    return None


def _members(container: dict[str, Any] | list[Any]) -> Iterator[tuple[Any, Any]]:
    """(key, value) of an object, (index, value) of an array: one iterator, resumed where the walk left it."""
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _value_problem(value: Any, *, strings: bool) -> str | None:
    """Why ``value`` itself (not what it holds) cannot be written as JSON again, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return _("This number is too large: it must fit a 64-bit float.")
    if strings and isinstance(value, str):
        try:
            ProhibitSurrogateCharactersValidator()(value)
        except ValidationError as exc:
            return str(exc.detail[0])  # type: ignore[index]
    return None
