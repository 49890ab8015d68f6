"""gradlab.signals: the one SIGINT/SIGTERM helper, as `gradlab run` and `gradlab sweep` use it."""

import os
import signal
import threading

import pytest

from gradlab import sweep
from gradlab.signals import STOP_SIGNALS, on_stop_signals
from gradlab.signals import stop_on_signals as _stop_on_signals


def _handlers():
    return {number: signal.getsignal(number) for number in STOP_SIGNALS}


@pytest.mark.parametrize("number", STOP_SIGNALS)
def test_the_handler_gets_the_signal_and_the_old_handlers_come_back(number):
    before, received = _handlers(), []
    with on_stop_signals(received.append):
        os.kill(os.getpid(), number)
        assert _handlers() != before
    assert received == [number]
    assert _handlers() == before


def test_outside_the_main_thread_nothing_is_installed():
    before, seen = _handlers(), []

    def body():
        with on_stop_signals(seen.append):
            seen.append(_handlers() == before)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [True]


def test_run_flags_the_first_signal_and_raises_on_the_second():
    before = _handlers()
    with pytest.raises(KeyboardInterrupt), _stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_number == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
    assert _handlers() == before


def test_sweep_stops_starting_points_and_passes_the_signal_on(tmp_path):
    class Worker:
        def __init__(self):
            self.signals = []

        def send_signal(self, number):
            self.signals.append(number)

    pool, worker, before = sweep._WorkerPool({}, tmp_path), Worker(), _handlers()
    pool.live.add(worker)
    with pool.forward_signals():
        os.kill(os.getpid(), signal.SIGINT)
    assert pool.stopped and worker.signals == [signal.SIGINT]
    assert _handlers() == before
