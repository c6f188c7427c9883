"""The arm x seed trainings of an experiment: one trainer process each, local or as Ray tasks.

Each training is the trainer's own CLI (`vemi-eval train codec|lm`), the command a user would type, so an
experiment's checkpoints are made exactly as a standalone run's. A training whose sidecar already shows
the planned steps and options is done and skipped; an unfinished one resumes from its state file.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..sweep.plan import slugify
from ..training.recipes import trained_with
from ..training.state import file_sha256
from .spec import Arm, Experiment

MINUTES_CAP = 120.0  # --minutes is an upper bound only: the arms are equal in steps


class TrainingFailed(Exception):
    """A trainer process failed: the experiment is INCOMPLETE (exit 4); the same command resumes."""


@dataclass(frozen=True)
class Training:
    arm: Arm
    seed: int
    out: Path  # the checkpoint; its sidecar is out.with_suffix(".json")
    argv: tuple[str, ...]
    threads: int = 1
    device: str = "cpu"

    @property
    def sidecar(self) -> Path:
        return self.out.with_suffix(".json")


def training_key(exp: Experiment, arm: Arm, seed: int, device: str) -> str:
    """What decides a training's result: the same key is the same training, whichever experiment asks
    (the three codec experiments share one baseline: trained once, the very same checkpoint each time)."""
    init = file_sha256(exp.init_from) if exp.init_from is not None else None
    config = file_sha256(arm.config) if arm.config is not None else None
    args = [*exp.train_args, *arm.train_args]
    facts = [exp.trainer, init, exp.steps, seed, args, sorted(arm.options), device]
    if config is not None:  # (absent from the facts of a plain arm, so its key stays what it was)
        facts.append(config)
    for a in args:  # a file an argument names (a teacher: --teacher CKPT[:CONFIG]) is part of the training
        named = Path(a.split(":")[0])
        if named.is_file():
            facts.append(file_sha256(named))
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:12]


def plan_trainings(exp: Experiment, folder: Path, threads: int = 1, device: str = "cpu") -> list[Training]:
    """Every arm x seed, in a fixed order (arm by arm, seeds inside), each at its key's path in
    ``folder`` (the trainings of every experiment)."""
    jobs = []
    for arm in (a for a in exp.arms if a.trained):
        for seed in exp.seeds:
            what = "+".join(arm.options) or (arm.config.stem if arm.config is not None else None)
            if what is None:  # an arm with arguments of its own is not the baseline: its files say which
                what = slugify(arm.name) if arm.train_args else "baseline"
            out = folder / f"{exp.trainer}-{what}-s{seed}-{training_key(exp, arm, seed, device)}.safetensors"
            argv = [sys.executable, "-m", "vemi_eval.cli", "train", exp.trainer, "--out", str(out)]
            argv += ["--seed", str(seed), "--steps", str(exp.steps), "--minutes", str(MINUTES_CAP)]
            argv += ["--threads", str(threads), "--device", device, *exp.train_args, *arm.train_args]
            if arm.config is not None:
                argv += ["--config", str(arm.config)]
            if exp.init_from is not None:
                argv += ["--init-from", str(exp.init_from)]
            for opt in arm.options:
                argv += ["--option", opt]
            jobs.append(Training(arm, seed, out, tuple(argv), threads, device))
    return jobs


def is_done(job: Training, steps: int) -> bool:
    """The checkpoint and its final sidecar are there, with the planned steps and options."""
    if not (job.out.is_file() and job.sidecar.is_file()):
        return False
    try:
        info = json.loads(job.sidecar.read_text())
    except (OSError, ValueError):
        return False
    return (
        info.get("final", True) is True
        and int(info.get("steps", -1)) == steps  # equal steps per arm: a longer run is not this one
        and set(trained_with(info)) == set(job.arm.options)
    )


def run_training(argv: tuple[str, ...], log_path: str) -> int:
    """One trainer process; its output goes to ``log_path``. Returns its exit code.

    The trainer runs in a session of its own, so a Ctrl-C reaches it once, from here: it finishes its
    step and saves its state (training/interrupt.py) while this waits; a second Ctrl-C kills it."""
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait()
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
            raise


def train_all(
    exp: Experiment, jobs: list[Training], echo: Callable[[str], None], address: str | None = None,
    use_ray: bool = False,
) -> None:  # fmt: skip
    """Run the trainings not yet done: one after another here, or as Ray tasks (``use_ray``)."""
    planned = [str(j.out) for j in jobs]
    todo = [j for j in jobs if not is_done(j, exp.steps)]
    echo(f"experiment {exp.name}: {len(jobs) - len(todo)} of {len(jobs)} trainings already done")
    if not todo:
        return
    if use_ray:
        _train_on_ray(todo, echo, address)
    else:
        for j in todo:
            if [str(k.out) for k in plan_trainings(exp, j.out.parent, j.threads, j.device)] != planned:
                raise TrainingFailed(  # a warm start or teacher replaced mid-experiment: keys would lie
                    "a file the trainings start from changed during the experiment; run it again"
                )
            echo(f"training {j.arm.name} seed {j.seed} ({exp.steps} steps) -> {j.out}")
            code = run_training(j.argv, str(j.out.with_suffix(".log")))
            if code != 0:
                raise TrainingFailed(
                    f"training {j.arm.name} seed {j.seed} failed (exit {code}): see "
                    f"{j.out.with_suffix('.log')}; the other trainings are kept, the same command resumes"
                )
    missing = [j for j in jobs if not is_done(j, exp.steps)]
    if missing:
        raise TrainingFailed(f"trainings did not finish: {', '.join(str(j.out) for j in missing)}")


def _train_on_ray(todo: list[Training], echo: Callable[[str], None], address: str | None) -> None:
    """One Ray task per training, one CPU each. Each node needs the same checkout at the same path (the
    trainer runs there); the checkpoint and its sidecar come back as bytes and are written here."""
    from ..sweep.cluster import connect, import_ray

    ray = import_ray("`vemi-eval experiment run --ray`")
    started = connect(ray, address, None, echo)

    @ray.remote(num_cpus=1, max_calls=1)
    def train_remote(argv: tuple[str, ...], out: str) -> dict[str, bytes | int]:
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="vemi-exp-"))
        local = scratch / Path(out).name
        argv = tuple(local.as_posix() if a == out else a for a in argv)
        code = run_training(argv, str(local.with_suffix(".log")))
        files = {  # the weights, sidecar and log (the resume state stays behind)
            p.name: p.read_bytes()
            for p in scratch.iterdir()
            if p.suffix in (".safetensors", ".json", ".log") and ".state." not in p.name
        }
        return {"code": code, **files}

    try:
        refs = {train_remote.remote(j.argv, str(j.out)): j for j in todo}
        for ref, job in refs.items():
            got = ray.get(ref)
            code = got.pop("code")
            for name, data in got.items():
                (job.out.parent / name).write_bytes(data)
            if code != 0:
                raise TrainingFailed(f"training {job.arm.name} seed {job.seed} failed on Ray (exit {code})")
            echo(f"trained {job.arm.name} seed {job.seed} on Ray")
    finally:
        if started:
            ray.shutdown()
