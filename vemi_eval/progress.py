"""Progress of a run on stderr, in a terminal and in a log alike.

On a terminal: a tqdm bar that stays on screen when the run ends. Anywhere else (CI, ``| tee``, a file):
one line per finished (kind, variant) with its time, the run's elapsed time and an estimate of what is
left, since a bar drawn with carriage returns is invisible in a log and erased at the end; and, inside a
measurement that runs for minutes, its own progress message every two minutes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: a duration a reader takes in at a glance."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class LineProgress:
    """The bar's interface (set_description, update, set_postfix_str, write, close) as plain lines."""

    # a measurement that runs for long (the full dialogue suite: ~45 min) says where it is this often
    HEARTBEAT_S = 120.0

    def __init__(self, total: int, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.stream, self.clock = total, stream, clock
        self.done = 0
        self.started = clock()
        self.step_started = self.started
        self.last_line = self.started
        self.what = ""

    def set_description(self, what: str) -> None:
        self.what = what
        self.step_started = self.clock()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        """Messages from inside a measurement: one line in the log every ``HEARTBEAT_S`` at most, so that a
        long measurement is not silent, and a short one adds nothing to the per-measurement lines."""
        now = self.clock()
        if now - self.last_line >= self.HEARTBEAT_S:
            self.last_line = now
            into = f"{duration(now - self.step_started)} into {self.what or 'measurement'}"
            self.write(f"  ... {text} ({into})")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        elapsed = now - self.started
        left = self.total - self.done
        # the mean so far: kinds differ in cost, so this is a rough guide, and said to be one
        eta = f", about {duration(elapsed / self.done * left)} left" if self.done and left else ""
        self.write(
            f"[{self.done}/{self.total}] {self.what or 'measurement'} done in "
            f"{duration(now - self.step_started)} (elapsed {duration(elapsed)}{eta})"
        )
        self.step_started = self.last_line = now

    def write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Nothing to erase: every line stays in the log."""


class _Silent(LineProgress):
    """No progress lines; what ``write`` is given (a measurement's error) is still said."""

    def update(self, n: int = 1) -> None:
        self.done += n


def progress(total: int, enabled: bool, stream: TextIO | None = None) -> Any:
    """A tqdm bar on a terminal (left on screen), lines elsewhere, nothing when not ``enabled``."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return _Silent(total, stream)
    if stream.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="measurement", leave=True, dynamic_ncols=True, file=stream)
        bar.write = lambda line: tqdm.write(line, file=stream)  # above the bar, on its stream (not stdout)
        return bar
    return LineProgress(total, stream)
