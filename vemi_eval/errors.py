"""Errors the harness reports to a user as ONE line, and the exit codes of the command line.

Every error a user can cause (a bad suite file, an unknown flag, a missing checkpoint, unreadable data or
results, an output directory or history that cannot be written) becomes an exit code 2 with a one-line
message before any work, never a traceback. Errors of the harness itself (a measurement that crashes) are
logged with their traceback in run.log and leave the run INCOMPLETE. A write that fails once work has
started (a full disk) is exit 5: what was measured before it stays on disk.
"""

from __future__ import annotations

EXIT_OK = 0  # done (a run: VALID; a gate: no regression)
EXIT_GATE_FAILED = 1  # a gate found a regression
EXIT_BAD_INPUT = 2  # bad usage or bad input; one line on stderr says what
EXIT_INVALID = 3  # the run finished but is INVALID (a validity rule failed); the reasons are printed
EXIT_INCOMPLETE = 4  # a measurement crashed: results.json is INCOMPLETE, `--resume` retries what is missing
EXIT_STORAGE = 5  # results or history could not be written after work started (disk full...): one line
EXIT_INTERRUPTED = 130  # Ctrl-C: what finished is on disk, `--resume` continues

# every code the command line returns, for the README and --help (a test checks the README lists them)
EXIT_CODES = {
    EXIT_OK: "done (run VALID, gate passed)",
    EXIT_GATE_FAILED: "the gate found a regression",
    EXIT_BAD_INPUT: "bad usage or bad input, found before any work; one line on stderr says what",
    EXIT_INVALID: "the run finished but is INVALID (a validity rule failed, or a kind scored nothing)",
    EXIT_INCOMPLETE: "the run is INCOMPLETE (a measurement crashed; `--resume` redoes only what is missing)",
    EXIT_STORAGE: "results, history or a training's outputs could not be written once work had started",
    EXIT_INTERRUPTED: "interrupted (finished work is on disk; the printed command continues)",
}


class VemiError(Exception):
    """Base of the harness's user-facing errors (exit code 2)."""


class SuiteError(VemiError):
    """Unknown suite, unreadable or invalid suite file."""


class DataError(VemiError):
    """Missing or unreadable data (a measurement raises it for data it cannot use)."""


class ResultsError(VemiError):
    """A run directory or results.json that is missing, unreadable or of an unknown schema."""


class OptionsError(VemiError):
    """Command-line options that cannot work together (cuda asked on a machine without it, ...)."""


class StorageError(Exception):
    """A write that failed after work started (disk full, directory removed): exit 5, not a user error.
    Its message says what is kept and how to continue."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: the harness's own and the reference model's."""
    from reference_model import CheckpointError, ConfigError, FlagError

    return (VemiError, FlagError, ConfigError, CheckpointError)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (messages are meant to be one line; this enforces it)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
