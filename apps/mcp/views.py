from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from apps.accounts.decorators import permission_required
from apps.accounts.permissions import Perm, role_has
from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError, put_on_form
from apps.core.kept_secrets import secret_forget, secret_keep, secret_kept
from apps.core.placed_messages import message_at, messages_by_place
from apps.core.views import post_only
from apps.mcp import services
from apps.mcp.client import ToolListing
from apps.mcp.forms import McpServiceEditForm, McpServiceForm
from apps.mcp.models import McpService
from apps.mcp.selectors import access_mcp_service, mcp_service_list
from apps.mcp.tool_names import MAX_TOOLS_PER_REQUEST, MAX_TOOLS_PER_SERVICE

#: The forms auth headers typed into a submission with errors are kept for (apps.core.kept_secrets); an edit form's
#: name ends with its service's id.
ADD_FORM = "mcp:add"
EDIT_FORM = "mcp:edit:"
#: The actions whose result is said on the service's card, where its button is; a removed service's is said atop the
#: page, its card gone.
ON_THE_CARD = ("test", "enable", "disable")
#: A service with more tools than this shows them folded: its card is not a page long.
TOOLS_FOLDED_ABOVE = 8


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
        kept = _headers_kept(request, form=ADD_FORM)
        if form.is_valid():
            data = form.cleaned_data
            try:
                service = services.mcp_service_create(
                    actor=request_actor(request), name=data["name"], url=data["url"], type=data["type"],
                    timeout_seconds=data["timeout_seconds"], headers=data["headers"] or kept,
                )  # fmt: skip
            except ApplicationError as exc:
                put_on_form(form, exc)
                status = 402 if exc.code == "quota_exceeded" else 400
            else:
                secret_forget(request, form=ADD_FORM)
                messages.success(request, _("%(name)s is added. Test it to load its tools.") % {"name": service.name})
                return redirect("mcp:services")
        else:
            status = 400
        _keep_headers(request, form, name=ADD_FORM, kept=kept)
    listed = list(mcp_service_list())
    # A turn offers the model the first MAX_TOOLS_PER_REQUEST, in this order (apps.chat.services.tools_for).
    offered = sum(len(service.offered_tools) for service in listed if service.is_active)
    top, placed = messages_by_place(request, [_card(service) for service in listed])
    context = {
        "cards": [(service, placed[_card(service)]) for service in listed],
        "messages": top,
        "form": form,
        "can_manage": can_manage,
        "tools_offered": offered,
        "tools_left_out": max(offered - MAX_TOOLS_PER_REQUEST, 0),
        "max_tools": MAX_TOOLS_PER_REQUEST,
        "tools_folded_above": TOOLS_FOLDED_ABOVE,
    }
    return render(request, "mcp/services.html", context, status=status)


def _card(service: McpService) -> str:
    """The id of the service's card on the services page: where the result of its test, enabling or disabling is
    shown, and the anchor these go back to."""
    return f"service-{service.pk}"


def _headers_kept(request: HttpRequest, *, form: str) -> dict[str, str]:
    """The auth headers typed into this form's last submission, which had errors (apps.core.kept_secrets)."""
    kept = secret_kept(request, form=form, reference=request.POST.get("kept_secret", ""))
    headers = json.loads(kept) if kept else {}
    return headers if isinstance(headers, dict) else {}


def _keep_headers(request: HttpRequest, form: McpServiceForm, *, name: str, kept: dict[str, str]) -> None:
    """A form with errors: keep the auth headers typed (or kept before) for its next submission, not shown in the
    page, unless they are what is wrong or the form removes them."""
    typed = form.cleaned_data.get("headers") or kept
    if typed and not form.cleaned_data.get("clear_headers") and "headers" not in form.errors:
        form.keep_secret(secret_keep(request, form=name, secret=json.dumps(typed)))


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
        if action == "test" and exc.code == "mcp_unreachable":  # the card says what went wrong: not twice
            message_at(request, messages.ERROR, _("%(name)s did not pass the test: what went wrong is below.")
                       % {"name": service.name}, place=_card(service))  # fmt: skip
        elif action in ON_THE_CARD:
            message_at(request, messages.ERROR, exc.message, place=_card(service))
        else:
            messages.error(request, exc.message)
    else:
        if action == "test":
            _say_tested(request, service, result)
        elif action in ON_THE_CARD:
            done = {
                "enable": _("%(name)s is enabled: chats may use its tools."),
                "disable": _("%(name)s is disabled: chats no longer use its tools."),
            }
            message_at(request, messages.SUCCESS, done[action] % {"name": service.name}, place=_card(service))
        else:
            messages.success(request, _("%(name)s is removed.") % {"name": service.name})
    if action in ON_THE_CARD:  # its result is on the service's card: the page opens there
        return redirect(reverse("mcp:services") + f"#{_card(service)}")
    return redirect("mcp:services")


def _say_tested(request: HttpRequest, service: McpService, listing: ToolListing) -> None:
    """What a test loaded, on the service's card; that the server lists more, if it does; and the tools left out
    for their input schema, if any."""
    words = {"name": service.name, "count": len(listing.tools)}
    answers = ngettext("%(name)s answers with %(count)d tool.", "%(name)s answers with %(count)d tools.",
                       len(listing.tools))  # fmt: skip
    said = [(messages.SUCCESS, answers % words)]
    limits = {"most": MAX_TOOLS_PER_SERVICE, "size": filesizeformat(settings.MCP_MAX_TOOL_LIST_BYTES)}
    if listing.more and not listing.tools:  # its first tool alone over the size, say: not "only the first 0"
        said.append((messages.WARNING,
                     _("%(name)s lists more tools than HydroNet loads from one server (at most %(most)d, of %(size)s "
                       "in all), and none of them is loaded.") % (words | limits)))  # fmt: skip
    elif listing.more:
        said.append((messages.WARNING,
                     ngettext("%(name)s lists more tools than HydroNet loads from one server (at most %(most)d, of "
                              "%(size)s in all): only the first is loaded.",
                              "%(name)s lists more tools than HydroNet loads from one server (at most %(most)d, of "
                              "%(size)s in all): only the first %(count)d are loaded.",
                              len(listing.tools)) % (words | limits)))  # fmt: skip
    if listing.unusable:
        left_out = "; ".join(f"{name} ({problem})" for name, problem in listing.unusable[:10])
        said.append((messages.WARNING,
                     ngettext("%(name)s lists %(count)d tool that a model server or HydroNet could not use (its input "
                              "schema is not valid JSON Schema, or not as MCP defines it): it is left out. %(tools)s",
                              "%(name)s lists %(count)d tools that a model server or HydroNet could not use (their "
                              "input schema is not valid JSON Schema, or not as MCP defines it): they are left out. "
                              "%(tools)s",
                              len(listing.unusable))
                     % {"name": service.name, "count": len(listing.unusable), "tools": left_out}))  # fmt: skip
    for level, text in said:
        message_at(request, level, text, place=_card(service))


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
        kept = _headers_kept(request, form=f"{EDIT_FORM}{service.pk}")
        if form.is_valid():
            data = form.cleaned_data
            headers = {} if data["clear_headers"] else (data["headers"] or kept or None)  # None keeps them
            try:
                services.mcp_service_update(
                    actor=actor, service=service, name=data["name"], url=data["url"], type=data["type"],
                    timeout_seconds=data["timeout_seconds"], headers=headers, disabled_tools=form.disabled_tools(),
                )  # fmt: skip
            except ApplicationError as exc:
                put_on_form(form, exc)
                status = 400
            else:
                secret_forget(request, form=f"{EDIT_FORM}{service.pk}")
                messages.success(request, _("%(name)s is saved.") % {"name": data["name"]})
                return redirect("mcp:services")
        else:
            status = 400
        _keep_headers(request, form, name=f"{EDIT_FORM}{service.pk}", kept=kept)
    else:
        disabled = set(service.disabled_tools)
        form = McpServiceEditForm(
            initial={"name": service.name, "url": service.url, "type": service.type,
                     "timeout_seconds": service.timeout_seconds,
                     "offered_tools": [name for name in tool_names if name not in disabled]},
            tool_names=tool_names,
        )  # fmt: skip
    return render(request, "mcp/service_edit.html", {"form": form, "service": service}, status=status)
