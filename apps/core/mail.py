"""Sending email from tasks: a mail server that cannot take a message now is tried again later.

Every email HydroNet sends goes from a Celery task. Django's ``send_mail`` raises whatever the mail server or the
network did, and a task that raised was done: a mail server restarting, a full queue (a 4xx reply) or a network
blip lost the email for good (a quota alert fires once a month, so its admins never heard of it). Here the failures
that pass are told from the ones that do not:

* **deferred** (``MailDeferred``): the server was unreachable, closed the connection or timed out, or answered 4xx
  (RFC 5321's "transient negative completion"). The task tries again with growing waits (``retry_later``).
* anything else (a 5xx reply: a refused sender or recipients, a failed login; STARTTLS not offered) raises as it is.
  Trying again in a minute would give the same answer; the operator has to change something.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from typing import Any

from celery.utils.time import get_exponential_backoff_interval
from django.core.mail import send_mail

#: The waits between a task's tries grow from this many seconds, doubling, up to ``RETRY_MOST_SECONDS`` each:
#: with ``RETRIES`` tries after the first, about 20 minutes in all.
RETRY_FIRST_SECONDS = 10
RETRY_MOST_SECONDS = 300
RETRIES = 8


class MailDeferred(Exception):
    """The mail server could not take the message now; it may later."""


def mail_send(subject: str, body: str, to: Sequence[str], from_email: str | None = None) -> None:
    """Send one email to ``to`` (``from_email``: DEFAULT_FROM_EMAIL when None). Raises MailDeferred for a failure
    that may pass, and the mail backend's own exception for one that will not."""
    try:
        send_mail(subject, body, from_email, list(to))
    except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused (some refused: sent to the others)
        if all(_transient(code) for code, _reply in exc.recipients.values()):
            raise MailDeferred(f"the mail server deferred every recipient: {exc.recipients}") from exc
        raise
    except smtplib.SMTPResponseException as exc:  # a reply code: connecting, the sender, the data, the login
        if _transient(exc.smtp_code):
            raise MailDeferred(f"the mail server answered {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise
    except smtplib.SMTPNotSupportedError:  # the server lacks what the settings ask for (STARTTLS, a login)
        raise
    except OSError as exc:  # refused, reset, timed out, closed mid-way (SMTPServerDisconnected), DNS
        raise MailDeferred(f"the mail server could not be reached: {exc!r}") from exc


def _transient(code: int) -> bool:
    return 400 <= code < 500


def retry_later(task: Any, exc: MailDeferred) -> Exception:
    """What a bound task raises to be tried again after a deferred email: celery's ``Retry`` after the next wait
    of the backoff, or ``exc`` once its ``RETRIES`` are spent."""
    retries = task.request.retries
    if retries >= RETRIES:
        return exc
    countdown = get_exponential_backoff_interval(RETRY_FIRST_SECONDS, retries, RETRY_MOST_SECONDS, full_jitter=False)
    return task.retry(exc=exc, countdown=countdown, max_retries=RETRIES, throw=False)
