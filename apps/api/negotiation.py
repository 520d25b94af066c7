"""How DRF picks the response's format, with an unknown ``?format=`` refused as such."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's, but ``?format=`` naming a format the endpoint does not render (``api``: the browsable API, which
    is not installed) is a 406 ``not_acceptable``, not DRF's 404, which says the path does not exist."""

    def filter_renderers(self, renderers: Any, format: str) -> Any:
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            raise NotAcceptable(_("This endpoint answers in JSON only: leave out format=, or use format=json."))
        return matching
