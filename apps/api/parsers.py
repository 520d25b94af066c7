"""The request body parser of every DRF endpoint."""

from __future__ import annotations

import codecs
import math
import re
from typing import IO, Any

from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import get_encoding  # type: ignore[attr-defined]  # DRF's, not in its stubs
from rest_framework.settings import api_settings
from rest_framework.utils import json
from rest_framework.validators import ProhibitSurrogateCharactersValidator

# A JSON string escape of a UTF-16 surrogate: the only way a body decoded as UTF-8 can carry one (a pair of
# them decodes to one character; a lone one stays a surrogate, which no text can be encoded with).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with bodies nested deeper than Python's parser goes refused like any bad JSON, a
    body of ``null`` refused in the request's language (DRF's serializers answer it in English only), and
    values that cannot be sent on refused wherever they are (below).

    ``json.load`` raises RecursionError, not ValueError, at about a thousand levels (``[[[[...``),
    which DRF does not catch: a 500 that anyone could send, before authentication.

    A lone surrogate (``"\\ud800"``) and a number beyond a float's range (``1e400``, which Python reads as
    infinity) are JSON that Python reads but cannot write again: fields checked as text refuse the first
    (DRF's ``CharField``), but free-form JSON (``/v1``'s message contents, tool schemas) went on to the model
    server's request and failed there, as a 502. Both are refused here, for every field, with the field's path.
    """

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = get_encoding(parser_context or {})  # text charsets only (not bz2_codec: a bomb)
        try:
            text = codecs.getreader(encoding)(stream).read()
            data = json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if data is None:  # valid JSON, so not a ParseError's "not valid JSON"
            raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [_("Send a JSON object, not null.")]})
        problem = _unsendable(data, strings=_SURROGATE_ESCAPE.search(text) is not None)
        if problem is not None:
            path, message = problem
            details: Any = [message]
            for key in reversed(path or [api_settings.NON_FIELD_ERRORS_KEY]):
                details = {key: details}
            raise ValidationError(details)
        return data


def _unsendable(value: Any, *, strings: bool, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str] | None:
    """The path to the first value that cannot be written as JSON again, and why; ``strings``: look at text too."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, _("This number is too large: it must fit a 64-bit float.")
    if strings and isinstance(value, str):
        try:
            ProhibitSurrogateCharactersValidator()(value)
        except ValidationError as exc:
            return path, str(exc.detail[0])  # type: ignore[index]
    if isinstance(value, dict):
        for key, item in value.items():
            inner = (*path, key)
            found = _unsendable(key, strings=strings, path=path) or _unsendable(item, strings=strings, path=inner)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unsendable(item, strings=strings, path=(*path, str(index)))
            if found:
                return found
    return None
