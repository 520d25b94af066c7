"""A web process told to stop (a deploy's SIGTERM, granian's reload): when its chat turns must end.

granian gives a worker ``deploy.web.GRACEFUL_SECONDS`` (30 s) after SIGTERM, then kills it. A turn still streaming
then lost everything: its partial reply was never stored, its call stayed counted in Redis with no ledger row, and
its conversation stayed busy until the hold expired (``CHAT_TURN_HOLD_SECONDS``), with the page saying
the reply would show "once it is done". So a turn may go on for ``WEB_TURN_GRACE_SECONDS`` after the signal (most
replies end within it), and then stops at its next read from the model server or before its next round or tool
call, as at its own deadline: what came is stored, the round given back, the hold given up, and the member told
the server restarted (``apps.chat.engine.ServerStopping``).

granian installs its own handlers for SIGTERM and SIGINT in the worker after the app is loaded, so the process
learns of the signal through ``signal.set_wakeup_fd``, which Python writes to for any signal that has a Python
handler, whichever handler that is: a thread reads it and starts the grace.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
_when = {"stop_turns_at": math.inf}  # one process's: set once, by the thread that reads the signals


def stop_turns_at() -> float:
    """When (``time.monotonic``) this process's turns must stop: infinity until it is told to stop."""
    return _when["stop_turns_at"]


def begin(grace: float | None = None) -> None:
    """The process was told to stop: its turns stop ``grace`` seconds from now (``WEB_TURN_GRACE_SECONDS``)."""
    grace = settings.WEB_TURN_GRACE_SECONDS if grace is None else grace
    _when["stop_turns_at"] = min(_when["stop_turns_at"], time.monotonic() + grace)
    logger.info("told to stop: chat turns still running stop in %s s", grace)


def watch_signals() -> bool:
    """Start the grace when SIGTERM or SIGINT reaches this process, whoever handles them. Only from the main thread
    (the web server's worker, as it loads the app); False where it cannot (another thread, a wakeup fd taken)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:
        os.close(read_end)
        os.close(write_end)
        return False
    if previous != -1:  # someone else's: give it back
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        return False
    threading.Thread(target=_read_signals, args=(read_end,), name="shutdown-watch", daemon=True).start()
    return True


def _read_signals(read_end: int) -> None:
    while True:
        for number in os.read(read_end, 64):
            if number in _STOP_SIGNALS:
                begin()
