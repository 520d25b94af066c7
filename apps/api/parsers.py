"""The request body parser of every DRF endpoint."""

from __future__ import annotations

from typing import IO, Any

from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.settings import api_settings


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with bodies nested deeper than Python's parser goes refused like any bad JSON, and a
    body of ``null`` refused in the request's language (DRF's serializers answer it in English only).

    ``json.load`` raises RecursionError, not ValueError, at about a thousand levels (``[[[[...``),
    which DRF does not catch: a 500 that anyone could send, before authentication.
    """

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
        if data is None:  # valid JSON, so not a ParseError's "not valid JSON"
            raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [_("Send a JSON object, not null.")]})
        return data
