from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from apps.accounts.decorators import permission_required
from apps.accounts.permissions import Perm
from apps.core.actors import request_actor
from apps.core.exceptions import ApplicationError, put_on_form
from apps.core.kept_secrets import secret_forget, secret_keep, secret_kept
from apps.core.placed_messages import message_at, messages_by_place
from apps.llm.client import check_model_server, provider_server
from apps.llm.forms import AssistantInstructionsForm, ModelProviderForm
from apps.llm.models import AssistantSettings, ModelProvider
from apps.llm.services import assistant_instructions_set, model_provider_delete, model_provider_save

#: The status card, where "Test connection" says what it found; and the form a typed key is kept for.
TEST_PLACE = "provider-status"
KEY_FORM = "llm:provider"


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
        return redirect(reverse("llm:provider") + f"#{TEST_PLACE}")
    if request.method == "POST":
        form = ModelProviderForm(request.POST, key_stored=bool(provider and provider.has_api_key))
        if (saved := _save(request, form)) is not None:
            return saved
        status = 400
    else:
        form = _provider_form(provider)
    return _page(request, form, provider, instructions_form, status=status)


def _save(request: HttpRequest, form: ModelProviderForm) -> HttpResponse | None:
    """Save the model server from the form, and go back to the page; None when the form has errors. A key typed
    into a form with errors is kept, not shown, for its next submission."""
    kept = secret_kept(request, form=KEY_FORM, reference=request.POST.get("kept_secret", ""))
    if form.is_valid():
        data = form.cleaned_data
        try:
            model_provider_save(
                actor=request_actor(request),
                name=data["name"],
                base_url=data["base_url"],
                model_ids=data["model_ids"],
                api_key="" if data["clear_api_key"] else (data["api_key"] or kept or None),  # None keeps it
                is_active=data["is_active"],
            )
        except ApplicationError as exc:
            put_on_form(form, exc)
        else:
            secret_forget(request, form=KEY_FORM)
            messages.success(request, _("The model server is saved."))
            return redirect("llm:provider")
    typed = form.cleaned_data.get("api_key") or kept
    if typed and not form.cleaned_data.get("clear_api_key") and "api_key" not in form.errors:
        form.keep_secret(secret_keep(request, form=KEY_FORM, secret=typed))
    return None


def _provider_form(provider: ModelProvider | None) -> ModelProviderForm:
    if provider is None:
        return ModelProviderForm()
    return ModelProviderForm(
        key_stored=provider.has_api_key,
        initial={
            "name": provider.name,
            "base_url": provider.base_url,
            "model_ids": "\n".join(provider.model_ids),
            "is_active": provider.is_active,
        },
    )


def _page(
    request: HttpRequest,
    form: ModelProviderForm,
    provider: ModelProvider | None,
    instructions_form: AssistantInstructionsForm,
    *,
    status: int = 200,
) -> HttpResponse:
    top, placed = messages_by_place(request, [TEST_PLACE])
    context = {
        "form": form,
        "provider": provider,
        "instructions_form": instructions_form,
        "messages": top,
        "test_result": placed[TEST_PLACE],
    }
    return render(request, "llm/provider.html", context, status=status)


def _report_check(request: HttpRequest, provider: ModelProvider) -> None:
    """Ask the server for its models and say what came back, next to the button that asked."""
    try:
        check = check_model_server(provider_server(provider))
    except ApplicationError as exc:
        message_at(request, messages.ERROR, exc.message, place=TEST_PLACE)
        return
    count = len(check.offered)
    message_at(
        request,
        messages.SUCCESS,
        ngettext(
            "Connected: the server offers %(count)d model.", "Connected: the server offers %(count)d models.", count
        )
        % {"count": count},
        place=TEST_PLACE,
    )
    if check.missing:
        missing = _("It does not list these models: %(models)s.") % {"models": ", ".join(check.missing)}
        message_at(request, messages.WARNING, missing, place=TEST_PLACE)
