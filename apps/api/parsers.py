"""The request body parser of every DRF endpoint."""

from __future__ import annotations

from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with bodies nested deeper than Python's parser goes refused like any bad JSON.

    ``json.load`` raises RecursionError, not ValueError, at about a thousand levels (``[[[[...``),
    which DRF does not catch: a 500 that anyone could send, before authentication.
    """

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
