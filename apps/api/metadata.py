"""What ``OPTIONS`` answers on the API (``REST_FRAMEWORK["DEFAULT_METADATA_CLASS"]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.metadata import BaseMetadata

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView


class PathMetadata(BaseMetadata):
    """The path's methods: every operation of an ``operations(...)`` path (apps.api.routing), not only the
    class that answered. DRF's ``SimpleMetadata`` would describe that class instead (its docstring, parsers
    and serializer fields); the OpenAPI schema documents the API."""

    def determine_metadata(self, request: Request, view: APIView) -> dict[str, Any]:
        router = getattr(getattr(request.resolver_match, "func", None), "cls", None)
        if getattr(router, "operation_classes", None):
            return {"methods": router().allowed_methods}  # type: ignore[misc]
        return {"methods": view.allowed_methods}
