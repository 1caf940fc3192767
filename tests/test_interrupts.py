import os
import signal

import pytest

from megl.interrupts import deferred_signals


@pytest.fixture
def sigterm_exits():
    """The handler megl.run_cli installs: SIGTERM becomes SystemExit(143)."""
    before = signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(SystemExit(128 + signum)))
    yield
    signal.signal(signal.SIGTERM, before)


def test_sigterm_inside_the_block_is_delivered_when_it_ends(sigterm_exits):
    done = []
    with pytest.raises(SystemExit) as stop:
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("the write finished")
    assert done == ["the write finished"] and stop.value.code == 143


def test_ctrl_c_inside_the_block_is_delivered_when_it_ends():
    # Python's own Ctrl-C handler: a job started in the background (`make test &`) inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("the write finished")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["the write finished"]


def test_nested_blocks_deliver_once_after_the_outer_one(sigterm_exits):
    done = []
    with pytest.raises(SystemExit):
        with deferred_signals():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
            done.append("outer write finished")
    assert done == ["outer write finished"]


def test_handlers_are_restored_and_a_decorated_function_returns_normally(sigterm_exits):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    @deferred_signals()
    def write():
        return 7

    assert write() == 7 and write() == 7
    assert {s: signal.getsignal(s) for s in before} == before
