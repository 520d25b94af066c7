"""A turn that waits (a tool call, a model that has not answered yet) while its client may have gone.

A WSGI server learns that its client went away only when it writes to it: granian closes the response (and so the
turn's generators) at the first write after the client closed its connection, and not before (tested: the client
gone at 0.3 s, a body that wrote every second was closed at the write at 1.0 s). A turn blocked in a tool call or
in a read from a silent model server wrote nothing, so it ran on, holding its conversation, its web thread and the
model server's request, until the tool or the model answered (QA, 2026-12-08). So what may wait runs in a thread
of its own, and the turn says ``WAITING`` every ``WAIT_EVERY_SECONDS`` that nothing came: the response writes a
comment (``: waiting``), which every SSE reader ignores, and a client that left is found at that write.
Closing the turn then stops what it waited for (``relayed``'s ``interrupt``, the tool call's ``stop``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from queue import Empty, SimpleQueue
from typing import Any

from django.utils import translation

from apps.tenants.db import connection

# How long a turn waits in silence before it says so (one SSE comment of 12 bytes each time).
WAIT_EVERY_SECONDS = 1.0
# How long closing a turn waits for what it stopped to end (a tool call's cancellation to go out, a read to return).
STOP_WAIT_SECONDS = 3.0


class Waiting:
    """Nothing came for ``WAIT_EVERY_SECONDS``: a chance to write, and so to learn whether the client is there."""

    def __repr__(self) -> str:
        return "WAITING"


WAITING = Waiting()
_END = object()


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    """``work`` in a daemon thread that speaks the request's language and reads the request's workspace."""
    language = translation.get_language()
    tenant = getattr(connection, "tenant", None)

    def run() -> None:
        try:
            if tenant is not None:
                connection.set_tenant(tenant)  # no query: the schema is set on the connection's next use
            with translation.override(language):
                work()
        finally:
            connection.close()  # this thread's own, if it opened one

    thread = threading.Thread(target=run, daemon=True, name="hydronet-wait")
    thread.start()
    return thread


def relayed[T](items: Iterator[T], *, interrupt: Callable[[], None]) -> Generator[T | Waiting, None, None]:
    """``items``, read in a thread of their own, each as it comes; ``WAITING`` for each ``WAIT_EVERY_SECONDS`` in
    which none came. An exception they raise is raised here. Closed before they end, ``interrupt`` is called (it
    must make the thread's read return: a model stream's socket is shut down) and the thread awaited."""
    queue: SimpleQueue[tuple[Any, BaseException | None]] = SimpleQueue()
    closing = threading.Event()

    def pump() -> None:
        try:
            for item in items:
                queue.put((item, None))
                if closing.is_set():
                    break
            queue.put((_END, None))
        except BaseException as exc:  # handed to the reader, which raises it
            queue.put((_END, exc))

    thread = _in_thread(pump)
    try:
        while True:
            try:
                item, failure = queue.get(timeout=WAIT_EVERY_SECONDS)
            except Empty:
                yield WAITING
                continue
            if item is _END:
                if failure is not None:
                    raise failure
                return
            yield item
    finally:
        if thread.is_alive():
            closing.set()
            interrupt()
            thread.join(STOP_WAIT_SECONDS)


def waited[T](work: Callable[[threading.Event], T]) -> Generator[Waiting, None, T]:
    """``work(stop)``'s result, run in a thread of its own, saying ``WAITING`` meanwhile; closed before it ends,
    ``stop`` is set (``work`` ends what it does, a tool call its cancellation sent) and the thread awaited."""
    stop = threading.Event()
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work(stop)
        except BaseException as exc:
            box["failure"] = exc
        finally:
            done.set()

    thread = _in_thread(run)
    try:
        while not done.wait(WAIT_EVERY_SECONDS):
            yield WAITING
    finally:
        if not done.is_set():
            stop.set()
            thread.join(STOP_WAIT_SECONDS)
    if "failure" in box:
        raise box["failure"]
    return box["result"]
