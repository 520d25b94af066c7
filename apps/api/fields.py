"""Serializer fields that take a JSON body's values as JSON types, and dates as the API documents them.

DRF's fields accept what an HTML form would send: ``"yes"``, ``"1"`` and ``"on"`` for true,
``"1_000"``, ``" 100 "`` and full-width digits for an integer (Python's ``int()``), ``"0.5"``
for a number; its ``DateField`` takes whatever ``date.fromisoformat`` takes (``20261201``,
``2026-W49-1``, digits of any script). A JSON client that sends a string where the API
documents a number has a bug, and OpenAI's API refuses it; so do these, with DRF's own
messages. Query parameters are strings by nature and keep DRF's fields.

DRF's ``CharField`` also takes ``5`` and ``true`` as ``"5"`` and ``"True"``: ``refuse_non_strings``
refuses them for every text field of a body at once (``apps.api.base.JsonSerializer`` calls it).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class JsonBooleanField(serializers.BooleanField):
    """``true`` or ``false``, nothing else."""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)


class JsonIntegerField(serializers.IntegerField):
    """A JSON integer: not a string, a float or a boolean (which Python counts as integers)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class JsonFloatField(serializers.FloatField):
    """A JSON number, integer or not; not a string or a boolean."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return float(super().to_internal_value(data))


class IsoDateField(serializers.DateField):
    """A date written YYYY-MM-DD in ASCII digits, as the API's error message says, and nothing else."""

    default_error_messages = {
        # A well-formed date that is on no calendar (2026-02-30, 2026-13-01): "wrong format" sent the client to
        # check a format it had right.
        "nonexistent": _("There is no such date: {value} does not exist."),
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(input_formats=["iso-8601"], **kwargs)

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            if not _ISO_DATE.fullmatch(value):
                self.fail("invalid", format="YYYY-MM-DD")
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                self.fail("nonexistent", value=value)
        return super().to_internal_value(value)


class InRangeDateTimeField(serializers.DateTimeField):
    """DRF's ``DateTimeField``, with a time that exists in no time zone's year 1 refused as out of range.

    A time without an offset is read in the settings' zone (Asia/Shanghai, +08:00), so ``0001-01-01T00:30`` is
    before the year 1 in UTC: DRF (3.18) checks that the time exists by converting it to UTC, and let that
    ``OverflowError`` through as a 500. It is DRF's own "out of range" 400 here, as for a time with an offset.
    """

    def enforce_timezone(self, value: Any) -> Any:
        try:
            return super().enforce_timezone(value)
        except OverflowError:
            self.fail("overflow")


def refuse_non_strings(fields: Mapping[str, serializers.Field], data: Any) -> None:
    """Raise a ValidationError for a body's text fields (and lists and objects of text) given anything but JSON
    strings."""
    if not isinstance(data, dict):
        return
    wrong: dict[str, list[str]] = {}
    for name, field in fields.items():
        value = data.get(name)
        child = field.child if isinstance(field, serializers.ListField | serializers.DictField) else None
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if isinstance(field, serializers.CharField) and value is not None and not isinstance(value, str):
            wrong[name] = [str(field.error_messages["invalid"])]
        elif isinstance(child, serializers.CharField) and not all(isinstance(item, str) for item in items):
            wrong[name] = [str(child.error_messages["invalid"])]
    if wrong:
        raise serializers.ValidationError(wrong)


class BoundedListField(serializers.ListField):
    """DRF's ``ListField``, quick to refuse a long list: ``max_length`` is checked before the items (DRF checks
    it after them, as a validator), and the items up to the first bad one (DRF gathers every item's errors).
    A body of 2.5 MB holds a million items: checking each, and writing an error for each, took half a minute
    before a list of at most 128 was refused for its length."""

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, list) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return list(super().to_internal_value(data))

    def run_child_validation(self, data: list[Any]) -> list[Any]:
        result = []
        for index, item in enumerate(data):
            try:
                result.append(self.child.run_validation(item))
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({str(index): exc.detail}) from exc
        return result
