"""Ctrl-C and SIGTERM stop a search the same way: the running trial is recorded as interrupted and retried by the
next run. SIGTERM (timeouts, kill, schedulers) is turned into the KeyboardInterrupt that Ctrl-C raises. Only a
process's main thread receives signals: workers that run as threads (several trials per process on a GPU) learn
of it from `stop_threads` and stop at their next epoch or look at the study (`raise_if_stopped`)."""

from __future__ import annotations

import os
import signal
import sys
import threading

_stopped = threading.Event()  # set in a process whose main thread was signalled: its worker threads stop too
_stopped_by = ["SIGINT"]


def signal_name(e: KeyboardInterrupt) -> str:
    """SIGINT or SIGTERM: which one stopped the run (`_interrupt` passes the name)."""
    return e.args[0] if e.args else "SIGINT"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _redeliver(unraisable: sys.UnraisableHookArgs) -> None:
    """A signal that lands while Python runs a garbage-collection callback (seen: SQLAlchemy's `_collection_gced`)
    raises our KeyboardInterrupt inside it, where Python prints it as "Exception ignored" and drops it: the search
    would go on. Send it again from another thread, so it lands after this hook and the callback have returned
    (should it land in another such callback, it comes back here)."""
    exc = unraisable.exc_value
    if isinstance(exc, KeyboardInterrupt) and exc.args and exc.args[0] in signal.Signals.__members__:
        threading.Timer(0.01, os.kill, (os.getpid(), signal.Signals[exc.args[0]])).start()
        return
    sys.__unraisablehook__(unraisable)


def catch_signals() -> None:
    _stopped.clear()  # a new run of workers in this process (tests run several)
    # Started in the background by a shell, a process inherits SIGINT ignored: take Ctrl-C / kill -INT back.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _redeliver


def stop_threads(e: KeyboardInterrupt) -> None:
    """The main thread was signalled: every worker thread of this process stops as it would have."""
    _stopped_by[0] = signal_name(e)
    _stopped.set()


def raise_if_stopped() -> None:
    """In a worker thread, raise the KeyboardInterrupt that the main thread received (`stop_threads`)."""
    if _stopped.is_set() and threading.current_thread() is not threading.main_thread():
        raise KeyboardInterrupt(_stopped_by[0])
