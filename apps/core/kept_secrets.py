"""A secret typed into a form that came back with errors (an API key, auth headers), kept for that form's next
submission instead of being shown in the page again or silently dropped.

The page carries only a random reference in a hidden field; the secret stays in the user's session, encrypted as
stored secrets are. One secret is kept per form, and only a submission carrying its reference gets it back: another
tab, or the same page opened afresh, does not.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, QueryDict
from django.utils.crypto import constant_time_compare

from apps.core.crypto import SecretUnreadable, decrypt, encrypt

SESSION_KEY = "kept_secrets"


def secret_keep(request: HttpRequest, *, form: str, secret: str) -> str:
    """Keep ``secret`` for the next submission of ``form``; the reference the page sends back to have it."""
    reference = secrets.token_urlsafe(16)
    kept = dict(request.session.get(SESSION_KEY, {}))
    kept[form] = {"reference": reference, "secret": encrypt(secret)}
    request.session[SESSION_KEY] = kept
    return reference


def secret_kept(request: HttpRequest, *, form: str, reference: str) -> str:
    """The secret kept for ``form`` under ``reference``; "" if none is (or it can no longer be decrypted)."""
    entry = request.session.get(SESSION_KEY, {}).get(form)
    if not reference or not isinstance(entry, dict) or not constant_time_compare(entry.get("reference", ""), reference):
        return ""
    try:
        return decrypt(entry.get("secret", ""))
    except SecretUnreadable:
        return ""


def secret_forget(request: HttpRequest, *, form: str) -> None:
    """Drop what is kept for ``form`` (it was saved)."""
    kept = dict(request.session.get(SESSION_KEY, {}))
    if kept.pop(form, None) is not None:
        request.session[SESSION_KEY] = kept


def data_with_reference(data: Mapping[str, Any], reference: str) -> Mapping[str, Any]:
    """A bound form's data with the reference to its kept secret in ``kept_secret``, the hidden field that sends it
    back (a QueryDict's other values, several for one name too, as they were)."""
    copy: Any = data.copy() if isinstance(data, QueryDict) else dict(data)
    copy["kept_secret"] = reference
    result: Mapping[str, Any] = copy
    return result
