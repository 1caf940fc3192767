"""Ctrl-C and SIGTERM held back while a write that must not be cut in half runs.

A signal that lands inside an MLflow call interrupts SQLite mid-transaction; the interrupted
connection keeps the database locked, so the run can then not be ended KILLED (it stays RUNNING,
and the process exits 1 with "database is locked" instead of 128 + signal). Inside
`deferred_signals()` a Ctrl-C or SIGTERM is only recorded, and delivered to the previous handler
as soon as the block ends, so it still stops the process, just after the write."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals():
    """Also a decorator. Nests; a no-op off the main thread (Python delivers signals only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in HELD}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
