"""How DRF picks the response's format, with an unknown ``?format=`` refused as such, and the media types an
endpoint answers in outside DRF's renderers (a stream of events, a Markdown file) accepted as such."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.utils.mediatypes import media_type_matches


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's, but ``?format=`` naming a format the endpoint does not render (``api``: the browsable API, which
    is not installed) is a 406 ``not_acceptable``, not DRF's 404, which says the path does not exist."""

    def filter_renderers(self, renderers: Any, format: str) -> Any:
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            formats = list(dict.fromkeys(renderer.format for renderer in renderers))
            if formats == ["json"]:
                raise NotAcceptable(_("This endpoint answers in JSON only: leave out format=, or use format=json."))
            raise NotAcceptable(_("This endpoint answers in %(formats)s: leave out format=, or use one of them.")
                                % {"formats": ", ".join(formats)})  # fmt: skip
        return matching

    def select_renderer(self, request: Request, renderers: Any, format_suffix: str | None = None) -> Any:
        """An ``Accept`` naming only what the endpoint answers in itself (``TenantApi.answers_also``: ``Accept:
        text/event-stream``, which SSE clients send) was DRF's 406, its only renderer being JSON's. Such a
        request goes on; the endpoint's JSON renderer writes its errors."""
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            view = (getattr(request, "parser_context", None) or {}).get("view")
            also = getattr(view, "answers_also", ())
            if any(media_type_matches(served, token) for served in also for token in self.get_accept_list(request)):
                return renderers[0], renderers[0].media_type
            raise
