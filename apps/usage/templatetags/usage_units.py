"""Template filters for the units the plans state their quotas in."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.utils.formats import number_format

from apps.usage.limits import MB

register = template.Library()


@register.filter
def megabytes(value: int | None) -> str:
    """Bytes in MB, the unit the plans state storage in (``MB`` = 1,048,576 bytes): "10,000 MB".

    Django's ``filesizeformat`` showed the same plan as "9.8 GB", next to a price list that says
    10,000 MB. Below 100 MB with one decimal; a few bytes are "< 0.1 MB", not "0.0 MB".
    """
    if value is None or value == "":
        return ""
    size = Decimal(int(value)) / MB
    if size == 0:
        return "0 MB"
    if size < Decimal("0.1"):
        return "< 0.1 MB"
    places = 0 if size >= 100 else 1
    rounded = size.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{number_format(rounded, places, force_grouping=True)} MB"
