"""SIGINT and SIGTERM while a run or a sweep is going: one helper for both.

``gradlab run`` turns the first signal into a flag (``stop_on_signals``: the loop ends after
its step, the run is *interrupted*); ``gradlab sweep`` stops starting points and passes the
signal on to its workers. Both install their handler for the duration of a ``with`` block
and put the previous handlers back afterwards, so a caller's own handling (pytest's, a
notebook's) is never left replaced. Standard library only.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call ``handler(signal_number)``.

    Python lets only the main thread install handlers: from another thread (a run started by
    a thread of the caller) the block runs with the signals handled as before.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number in STOP_SIGNALS:
        signal.signal(number, lambda signal_number, frame: handler(signal_number))
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@dataclass
class StopFlag:
    """Set by the signal handler; the loop finishes its step and stops."""

    signal_number: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """SIGINT/SIGTERM set a flag instead of raising; a second signal raises at once."""
    stop = StopFlag()

    def handler(signal_number):
        if stop.signal_number is not None:
            raise KeyboardInterrupt
        stop.signal_number = signal_number

    with on_stop_signals(handler):
        yield stop
