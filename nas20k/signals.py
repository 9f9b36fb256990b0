"""Ctrl-C and SIGTERM stop a search the same way: the running trial is recorded as interrupted and retried by the
next run. SIGTERM (timeouts, kill, schedulers) is turned into the KeyboardInterrupt that Ctrl-C raises."""

from __future__ import annotations

import os
import signal
import sys
import threading


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
    # Started in the background by a shell, a process inherits SIGINT ignored: take Ctrl-C / kill -INT back.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _redeliver
