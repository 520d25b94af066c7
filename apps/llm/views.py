from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from apps.accounts.decorators import permission_required
from apps.accounts.permissions import Perm
from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError, put_on_form
from apps.llm.client import check_model_server, provider_server
from apps.llm.forms import AssistantInstructionsForm, ModelProviderForm
from apps.llm.models import AssistantSettings, ModelProvider
from apps.llm.services import assistant_instructions_set, model_provider_delete, model_provider_save


@permission_required(Perm.MANAGE_SERVICES)
@require_http_methods(["GET", "POST"])
def provider_view(request: HttpRequest) -> HttpResponse:
    """The tenant's own model server (without one, the platform's is used), and the admins' instructions to
    the assistant."""
    provider = ModelProvider.objects.first()
    status = 200
    assistant = AssistantSettings.objects.first() or AssistantSettings()
    instructions_form = AssistantInstructionsForm(initial={"instructions": assistant.instructions})
    if request.method == "POST" and request.POST.get("action") == "instructions":
        instructions_form = AssistantInstructionsForm(request.POST)
        if instructions_form.is_valid():
            try:
                assistant_instructions_set(actor=request_actor(request),
                                           instructions=instructions_form.cleaned_data["instructions"])  # fmt: skip
            except ApplicationError as exc:
                put_on_form(instructions_form, exc)
            else:
                messages.success(request, _("The instructions are saved; the next reply follows them."))
                return redirect("llm:provider")
        return _page(request, _provider_form(provider), provider, instructions_form, status=400)
    if request.method == "POST" and request.POST.get("action") == "delete":
        model_provider_delete(actor=request_actor(request))
        messages.success(request, _("This workspace uses the platform's model server again."))
        return redirect("llm:provider")
    if request.method == "POST" and request.POST.get("action") == "test" and provider is not None:
        _report_check(request, provider)
        return redirect("llm:provider")
    if request.method == "POST":
        form = ModelProviderForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                model_provider_save(
                    actor=request_actor(request),
                    name=data["name"],
                    base_url=data["base_url"],
                    model_ids=data["model_ids"],
                    api_key="" if data["clear_api_key"] else (data["api_key"] or None),  # None keeps it
                    is_active=data["is_active"],
                )
            except ApplicationError as exc:
                put_on_form(form, exc)
                status = 400
            else:
                messages.success(request, _("The model server is saved."))
                return redirect("llm:provider")
        else:
            status = 400
    else:
        form = _provider_form(provider)
    return _page(request, form, provider, instructions_form, status=status)


def _provider_form(provider: ModelProvider | None) -> ModelProviderForm:
    if provider is None:
        return ModelProviderForm()
    return ModelProviderForm(
        initial={
            "name": provider.name,
            "base_url": provider.base_url,
            "model_ids": "\n".join(provider.model_ids),
            "is_active": provider.is_active,
        }
    )


def _page(
    request: HttpRequest,
    form: ModelProviderForm,
    provider: ModelProvider | None,
    instructions_form: AssistantInstructionsForm,
    *,
    status: int = 200,
) -> HttpResponse:
    context = {"form": form, "provider": provider, "instructions_form": instructions_form}
    return render(request, "llm/provider.html", context, status=status)


def _report_check(request: HttpRequest, provider: ModelProvider) -> None:
    """Ask the server for its models and say what came back, as the page's next message."""
    try:
        check = check_model_server(provider_server(provider))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return
    count = len(check.offered)
    messages.success(
        request,
        ngettext(
            "Connected: the server offers %(count)d model.", "Connected: the server offers %(count)d models.", count
        )
        % {"count": count},
    )
    if check.missing:
        messages.warning(
            request, _("It does not list these models: %(models)s.") % {"models": ", ".join(check.missing)}
        )
