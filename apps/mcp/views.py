from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from apps.accounts.decorators import permission_required
from apps.accounts.permissions import Perm, role_has
from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError, put_on_form
from apps.core.views import post_only
from apps.mcp import services
from apps.mcp.client import ToolListing
from apps.mcp.forms import McpServiceEditForm, McpServiceForm
from apps.mcp.models import McpService
from apps.mcp.selectors import access_mcp_service, mcp_service_list
from apps.mcp.tool_names import MAX_TOOLS_PER_REQUEST, MAX_TOOLS_PER_SERVICE


@permission_required(Perm.USE_MCP_SERVICES)
@require_http_methods(["GET", "POST"])
def services_view(request: HttpRequest) -> HttpResponse:
    """The tenant's MCP services; admins add, test, enable, disable and remove them here."""
    can_manage = role_has(getattr(request.user, "role", ""), Perm.MANAGE_SERVICES)
    form = McpServiceForm()
    status = 200
    if request.method == "POST":
        if not can_manage:
            return redirect("mcp:services")
        form = McpServiceForm(request.POST)
        if form.is_valid():
            try:
                service = services.mcp_service_create(actor=request_actor(request), **form.cleaned_data)
            except ApplicationError as exc:
                put_on_form(form, exc)
                status = 402 if exc.code == "quota_exceeded" else 400
            else:
                messages.success(request, _("%(name)s is added. Test it to load its tools.") % {"name": service.name})
                return redirect("mcp:services")
        else:
            status = 400
    listed = list(mcp_service_list())
    # A turn offers the model the first MAX_TOOLS_PER_REQUEST, in this order (apps.chat.services.tools_for).
    offered = sum(len(service.offered_tools) for service in listed if service.is_active)
    context = {
        "services": listed,
        "form": form,
        "can_manage": can_manage,
        "tools_offered": offered,
        "tools_left_out": max(offered - MAX_TOOLS_PER_REQUEST, 0),
        "max_tools": MAX_TOOLS_PER_REQUEST,
    }
    return render(request, "mcp/services.html", context, status=status)


@permission_required(Perm.MANAGE_SERVICES)
@post_only(back="mcp:services")
def service_action_view(request: HttpRequest, service_id: int, action: str) -> HttpResponse:
    actor = request_actor(request)
    service = access_mcp_service(actor, service_id)
    actions: dict[str, Any] = {
        "test": lambda: services.mcp_service_test(actor=actor, service=service),
        "enable": lambda: services.mcp_service_set_active(actor=actor, service=service, active=True),
        "disable": lambda: services.mcp_service_set_active(actor=actor, service=service, active=False),
        "delete": lambda: services.mcp_service_delete(actor=actor, service=service),
    }
    try:
        result = actions[action]()
    except ApplicationError as exc:
        if action == "test" and exc.code == "mcp_unreachable":  # the card below says what went wrong: not twice
            messages.error(request, _("%(name)s did not pass the test: what went wrong is on its card.")
                           % {"name": service.name})  # fmt: skip
        else:
            messages.error(request, exc.message)
    else:
        if action == "test":
            _say_tested(request, service, result)
        else:
            done = {
                "enable": _("%(name)s is enabled: chats may use its tools."),
                "disable": _("%(name)s is disabled: chats no longer use its tools."),
                "delete": _("%(name)s is removed."),
            }
            messages.success(request, done[action] % {"name": service.name})
    return redirect("mcp:services")


def _say_tested(request: HttpRequest, service: McpService, listing: ToolListing) -> None:
    """What a test loaded, as the page's next message; that the server lists more, if it does; and the tools left out
    for their input schema, if any."""
    words = {"name": service.name, "count": len(listing.tools)}
    answers = ngettext("%(name)s answers with %(count)d tool.", "%(name)s answers with %(count)d tools.",
                       len(listing.tools))  # fmt: skip
    messages.success(request, answers % words)
    limits = {"most": MAX_TOOLS_PER_SERVICE, "size": filesizeformat(settings.MCP_MAX_TOOL_LIST_BYTES)}
    if listing.more and not listing.tools:  # its first tool alone over the size, say: not "only the first 0"
        messages.warning(
            request, _("%(name)s lists more tools than HydroNet loads from one server (at most %(most)d, of %(size)s "
                       "in all), and none of them is loaded.") % (words | limits),
        )  # fmt: skip
    elif listing.more:
        messages.warning(
            request, ngettext("%(name)s lists more tools than HydroNet loads from one server (at most %(most)d, of "
                              "%(size)s in all): only the first is loaded.",
                              "%(name)s lists more tools than HydroNet loads from one server (at most %(most)d, of "
                              "%(size)s in all): only the first %(count)d are loaded.",
                              len(listing.tools)) % (words | limits),
        )  # fmt: skip
    if listing.unusable:
        left_out = "; ".join(f"{name} ({problem})" for name, problem in listing.unusable[:10])
        messages.warning(
            request, ngettext("%(name)s lists %(count)d tool that a model server or HydroNet could not use (its input "
                              "schema is not valid JSON Schema, or not as MCP defines it): it is left out. %(tools)s",
                              "%(name)s lists %(count)d tools that a model server or HydroNet could not use (their "
                              "input schema is not valid JSON Schema, or not as MCP defines it): they are left out. "
                              "%(tools)s",
                              len(listing.unusable))
            % {"name": service.name, "count": len(listing.unusable), "tools": left_out},
        )  # fmt: skip


@permission_required(Perm.MANAGE_SERVICES)
@require_http_methods(["GET", "POST"])
def service_edit_view(request: HttpRequest, service_id: int) -> HttpResponse:
    """Change a service's name, URL, transport, timeout or auth headers (to rotate a token, say), and choose
    which of its loaded tools the model is offered."""
    actor = request_actor(request)
    service = access_mcp_service(actor, service_id)
    status = 200
    tool_names = [tool.name for tool in service.exposed_tools]  # each once, if the server lists one twice
    if request.method == "POST":
        form = McpServiceEditForm(request.POST, tool_names=tool_names, disabled_tools=service.disabled_tools)
        if form.is_valid():
            data = form.cleaned_data
            headers = {} if data["clear_headers"] else (data["headers"] or None)  # None keeps them
            try:
                services.mcp_service_update(
                    actor=actor, service=service, name=data["name"], url=data["url"], type=data["type"],
                    timeout_seconds=data["timeout_seconds"], headers=headers, disabled_tools=form.disabled_tools(),
                )  # fmt: skip
            except ApplicationError as exc:
                put_on_form(form, exc)
                status = 400
            else:
                messages.success(request, _("%(name)s is saved.") % {"name": data["name"]})
                return redirect("mcp:services")
        else:
            status = 400
    else:
        disabled = set(service.disabled_tools)
        form = McpServiceEditForm(
            initial={"name": service.name, "url": service.url, "type": service.type,
                     "timeout_seconds": service.timeout_seconds,
                     "offered_tools": [name for name in tool_names if name not in disabled]},
            tool_names=tool_names,
        )  # fmt: skip
    return render(request, "mcp/service_edit.html", {"form": form, "service": service}, status=status)
