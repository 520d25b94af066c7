"""One API class per operation, several operations per path.

``operations(GET=UserListApi, POST=UserCreateApi)`` gives one URL pattern that
hands each request to the class for its method, and answers 405 (in the error
format) for any other. ``HEAD`` is served by the ``GET`` class, and ``OPTIONS`` by
the ``GET`` class (or the first) with the methods of the whole path, as a path with
one class answers both. drf-spectacular sees each operation's own class through
``OperationsSchemaGenerator``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.views import APIView

from apps.core.exceptions import json_error


class _OperationRouter(APIView):
    operation_classes: dict[str, type[APIView]] = {}
    operation_views: dict[str, Any] = {}

    @property
    def allowed_methods(self) -> list[str]:
        head = ["HEAD"] if "GET" in self.operation_classes else []
        return [*self.operation_classes, *head, "OPTIONS"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        method = request.method or ""
        if method == "HEAD":
            method = "GET"
        elif method == "OPTIONS":
            method = "GET" if "GET" in self.operation_views else next(iter(self.operation_views))
        view = self.operation_views.get(method)
        if view is None:
            # DRF's words, as a path served by one class says them (they read differently in both languages)
            said = str(MethodNotAllowed(request.method or "").detail)
            response = json_error("method_not_allowed", said, status=405, request=request)
        else:
            response = view(request, *args, **kwargs)
        response["Allow"] = ", ".join(self.allowed_methods)
        return response


def operations(**by_method: type[APIView]) -> Any:
    """A view for one path whose methods are served by separate operation classes."""
    classes = {method.upper(): cls for method, cls in by_method.items()}
    router: Any = type(
        "OperationRouter",
        (_OperationRouter,),
        {
            "operation_classes": classes,
            "operation_views": {method: cls.as_view() for method, cls in classes.items()},
        },
    )
    return router.as_view()


class OperationsSchemaGenerator(SchemaGenerator):
    """Describes each method of an ``operations(...)`` path by its own class."""

    def create_view(self, callback: Any, method: str, request: Any = None) -> Any:
        classes = getattr(getattr(callback, "cls", None), "operation_classes", None)
        if classes and method.upper() in classes:
            callback = classes[method.upper()].as_view()
        return super().create_view(callback, method, request)
