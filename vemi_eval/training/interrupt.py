"""Ctrl-C and SIGTERM during a training: finish the step, save the state, say how to resume.

A signal arriving in the middle of a step (inside ``opt.step``, say) would leave weights and moments out
of step with each other, so the handler only records the request; the training loop asks at the end of
each step (``StopRequest.__call__``), saves its state whole and raises ``TrainingInterrupted``. Before
the loop first asks (corpus building, model set-up) and after it has finished (held-out evaluation)
there is nothing to save that a rerun would not redo, so a signal then interrupts at once, as does a
second Ctrl-C while a step is finishing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """A training stopped on a signal after saving its state (the command line exits 130)."""

    def __init__(self, state_path: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}; the state is saved in {state_path}")
        self.state_path = Path(state_path)
        self.step = step


class StopRequest:
    """Whether a signal asked the training to stop. Calling it (once per step, from the loop's stopping
    test) arms it: from then on a signal waits for the step to end."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False

    def __call__(self) -> bool:
        self.armed = True
        return self.signum is not None

    def handle(self, signum: int, _frame: object) -> None:
        if not self.armed or self.signum is not None:  # nothing to save yet, or asked twice: stop now
            raise KeyboardInterrupt
        self.signum = signum
        # os.write: print() is not safe inside a signal handler
        os.write(2, b"stopping after this step to save the training state (Ctrl-C again: stop at once)\n")


@contextmanager
def stop_on_signal() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM become a ``StopRequest`` while the block runs (in the main thread only: a
    signal handler can be set nowhere else; elsewhere the request is never made)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    before = {s: signal.signal(s, stop.handle) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def end_of_loop(stop: StopRequest | None, state_path: Path, step: int) -> None:
    """Called once the loop has ended and the state is saved: raise ``TrainingInterrupted`` when a
    signal ended it; otherwise disarm, so that a signal during the evaluation that follows stops at once."""
    if stop is None:
        return
    if stop.signum is not None:
        raise TrainingInterrupted(state_path, step)
    stop.armed = False
