"""The ``[experiment]`` table of an experiment file, read into typed records and checked before any work."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import SuiteError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TRAINERS = ("codec", "lm")
_KEYS = {"enhancement", "trainer", "init_from", "steps", "seeds", "train_args", "arm", "description"}
_ARM_KEYS = {"name", "options", "checkpoint", "config", "train_args"}


@dataclass(frozen=True)
class Arm:
    name: str
    options: tuple[str, ...] = ()  # recipe options (training/recipes.py) of the experiment's trainer
    checkpoint: Path | None = None  # an arm that is not trained: this checkpoint (e.g. 4.1's teacher)
    config: Path | None = None  # the arm's model config (trainer --config, and the variant's config)
    train_args: tuple[str, ...] = ()  # trainer arguments of this arm only, after the experiment's

    @property
    def trained(self) -> bool:
        return self.checkpoint is None


@dataclass(frozen=True)
class Experiment:
    name: str  # the file's stem
    path: Path
    content: str  # the whole file (the measuring suite is built from it)
    enhancement: str
    trainer: str
    init_from: Path | None
    steps: int
    seeds: tuple[int, ...]
    train_args: tuple[str, ...]
    arms: tuple[Arm, ...]

    @property
    def baseline(self) -> Arm:
        return self.arms[0]


def read_experiment(path: str | Path) -> Experiment:
    """The experiment file at ``path``; SuiteError (one line, exit 2) says what is wrong."""
    from ..registry import BY_ID
    from ..training.recipes import available_recipes

    path = Path(path)
    where = str(path)
    try:
        content = path.read_text(encoding="utf-8")
        doc = tomllib.loads(content)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SuiteError(f"cannot read the experiment file {where}: {exc}") from None
    table = doc.get("experiment")
    if not isinstance(table, dict):
        raise SuiteError(f"{where}: no [experiment] table (see vemi_eval/experiments/__init__.py)")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise SuiteError(f"{where}: [experiment] unknown key(s) {', '.join(unknown)}")
    if "variants" in doc:
        raise SuiteError(f"{where}: an experiment's variants are its arms: leave [[variants]] out")
    for key in ("enhancement", "trainer", "steps", "seeds", "arm"):
        if key not in table:
            raise SuiteError(f"{where}: [experiment] needs {key!r}")
    if table["enhancement"] not in BY_ID:
        raise SuiteError(f"{where}: [experiment] enhancement {table['enhancement']!r} is not in the registry")
    trainer = table["trainer"]
    if trainer not in TRAINERS:
        raise SuiteError(f"{where}: [experiment] trainer {trainer!r} is not one of {', '.join(TRAINERS)}")
    steps = table["steps"]
    if not isinstance(steps, int) or steps < 1:
        raise SuiteError(f"{where}: [experiment] steps must be an integer >= 1, got {steps!r}")
    seeds = table["seeds"]
    distinct = isinstance(seeds, list) and len(set(map(str, seeds))) == len(seeds)
    if not distinct or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise SuiteError(f"{where}: [experiment] seeds must be distinct integers >= 0, got {seeds!r}")
    recipes = available_recipes()
    arms = []
    if not isinstance(table["arm"], list) or not all(isinstance(a, dict) for a in table["arm"]):
        raise SuiteError(f"{where}: [experiment] arm must be [[experiment.arm]] tables, not {table['arm']!r}")
    _strings(table.get("train_args", []), f"{where}: [experiment] train_args")
    for i, a in enumerate(table["arm"]):
        _strings(a.get("options", []), f"{where}: [[experiment.arm]] #{i + 1} options")
        _strings(a.get("train_args", []), f"{where}: [[experiment.arm]] #{i + 1} train_args")
        unknown = sorted(set(a) - _ARM_KEYS)
        if unknown or "name" not in a:
            raise SuiteError(
                f"{where}: [[experiment.arm]] #{i + 1} needs a name (keys: {', '.join(sorted(_ARM_KEYS))})"
            )
        for opt in a.get("options", []):
            r = recipes.get(opt)
            if r is None:
                known = ", ".join(sorted(n for n, r in recipes.items() if r.trainer == trainer)) or "none"
                raise SuiteError(
                    f"{where}: arm {a['name']!r}: unknown recipe option {opt!r} (known: {known})"
                )
            if r.trainer != trainer:
                raise SuiteError(f"{where}: arm {a['name']!r}: option {opt!r} is of the {r.trainer} trainer")
        checkpoint = _existing(path, a.get("checkpoint"), f"{where}: arm {a['name']!r} checkpoint")
        if checkpoint is not None and (a.get("options") or a.get("train_args")):
            raise SuiteError(f"{where}: arm {a['name']!r} names a checkpoint: it is not trained (no options)")
        config = _existing(path, a.get("config"), f"{where}: arm {a['name']!r} config")
        arms.append(
            Arm(
                str(a["name"]),
                tuple(a.get("options", [])),
                checkpoint,
                config,
                tuple(a.get("train_args", [])),
            )
        )
    if len(arms) < 2:
        raise SuiteError(f"{where}: an experiment needs a baseline arm and at least one more")
    if len({a.name for a in arms}) != len(arms):
        raise SuiteError(f"{where}: arm names must be distinct")
    if len({(a.options, a.checkpoint, a.config, a.train_args) for a in arms}) != len(arms):
        raise SuiteError(f"{where}: two arms are the same (options, checkpoint, config and arguments)")
    init_path = _existing(path, table.get("init_from"), f"{where}: [experiment] init_from")
    return Experiment(
        name=path.stem, path=path, content=content, enhancement=table["enhancement"], trainer=trainer,
        init_from=init_path, steps=steps, seeds=tuple(seeds), train_args=tuple(table.get("train_args", [])),
        arms=tuple(arms),
    )  # fmt: skip


def _strings(value: object, what: str) -> None:
    """A list of strings (``train_args = "--lr 1"`` would become one argument per character)."""
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise SuiteError(f"{what} must be a list of strings, got {value!r}")


def _existing(path: Path, value: str | None, what: str) -> Path | None:
    if not value:
        return None
    found = Path(value) if Path(value).is_absolute() else _repo_relative(path, value)
    if not found.is_file():
        raise SuiteError(f"{what} {value!r} does not exist")
    return found


def _repo_relative(path: Path, value: str) -> Path:
    """A relative init_from is relative to the experiment file, else to the current directory."""
    near = (path.parent / value).resolve()
    return near if near.exists() else Path(value).resolve()
