"""Nothing lost by a trainer (issue 32): --out and the state checked before any work, one training per
output, options and inputs refused in one line, Ctrl-C / SIGTERM / SIGKILL resume where they stopped.
Every training here is a few steps of a 2-layer LM on four short grids."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from reference_model.checkpoint import read_safetensors
from vemi_eval.cli import main
from vemi_eval.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_STORAGE, OptionsError
from vemi_eval.training.lm import TrainDataError, load_token_folder
from vemi_eval.training.outputs import check_training_outputs, one_writer

from .test_training_lm import SMALL, _task_data

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "reference_model" / "weights"
LM = "vemi_eval.training.lm.train_lm"


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    yield
    torch.set_num_threads(prev)  # the trainer sets --threads


@pytest.fixture
def task(tmp_path) -> Path:
    """A folder with the small config and a token-grid folder; the tests run inside it."""
    (tmp_path / "config.json").write_text(json.dumps(SMALL))
    (tmp_path / "grids").mkdir()
    grids = {f"s{i}": g.to(torch.int16) for i, g in enumerate(_task_data(4).grids)}
    save_file(grids, str(tmp_path / "grids" / "p.safetensors"))
    return tmp_path


def tl(task: Path, out: str, *extra: str, steps: int = 4) -> list[str]:
    """`train lm` of the issue's TL: a few steps, a tiny batch."""
    return [
        "train", "lm", "--config", str(task / "config.json"), "--data", str(task / "grids"),
        "--steps", str(steps), "--batch-size", "2", "--seq-len", "16", "--warmup-steps", "1",
        "--minutes", "2", "--out", str(task / out), *extra,
    ]  # fmt: skip


def cli(capsys, args: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    got = capsys.readouterr()
    return done.value.code, got.out, got.err


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(capsys, args: list[str], folder: Path, match: str) -> str:
    """Exit 2, one line on stderr saying ``match``, and every file under ``folder`` byte-identical."""
    before = hashes(folder)
    code, _, err = cli(capsys, args)
    assert code == EXIT_BAD_INPUT, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert match in lines[-1], err
    assert err.startswith("error: ") and len(lines) == 1 or lines[0].startswith("Usage:"), err
    assert hashes(folder) == before
    return err


# --- 1. the sidecar never overwrites another file; finished weights need --overwrite ------------------
def test_out_paths_that_would_destroy_a_file_are_refused(task, capsys):
    (task / "w.json").write_text('{"mine": 1}\n')
    refused(capsys, tl(task, "w.json"), task, "a .safetensors file")
    run = task / "RUN"
    run.mkdir()
    (run / "results.json").write_text('{"schema": "vemi-eval/results"}\n')
    refused(capsys, tl(task, "RUN/results.safetensors"), task, "name of a run's measurements")
    (task / "other.json").write_text('{"produced_by": "someone else"}\n')
    refused(capsys, tl(task, "other.safetensors"), task, "not a sidecar this trainer wrote")
    (task / "lone.safetensors").write_bytes(b"weights of someone")
    refused(capsys, tl(task, "lone.safetensors"), task, "without a sidecar")
    (task / "afile").write_text("x")
    refused(capsys, tl(task, "afile/w.safetensors"), task, "is a file, not a directory")
    save_file({"w": torch.zeros(2)}, str(task / "theirs.safetensors"))  # not a training state
    refused(capsys, tl(task, "s.safetensors", "--state", str(task / "theirs.safetensors"), "--fresh"), task,
            "is not a training state")  # fmt: skip
    refused(capsys, ["train", "codec", "--out", str(task / "c.json"), "--steps", "1"], task, ".safetensors")
    assert not (task / "s.safetensors").exists()


def test_finished_weights_are_replaced_only_with_overwrite(task, capsys):
    for name in ("tiny_lm.safetensors", "tiny_lm.json"):  # finished weights with their sidecar
        shutil.copy(BUNDLED / name, task / name)
    refused(capsys, tl(task, "tiny_lm.safetensors", steps=1), task, "--overwrite replaces them")
    code, out, err = cli(capsys, tl(task, "tiny_lm.safetensors", "--overwrite", steps=1))
    assert code == EXIT_OK, err
    assert json.loads((task / "tiny_lm.json").read_text())["recipe"]["config"]["dim"] == SMALL["dim"]
    for name in ("tiny_codec.safetensors", "tiny_codec.json"):
        shutil.copy(BUNDLED / name, task / name)
    refused(capsys, ["train", "codec", "--out", str(task / "tiny_codec.safetensors")], task, "--overwrite")


def test_a_second_training_of_the_same_output_is_refused(task, capsys):
    outputs = check_training_outputs(task / "w.safetensors", task / "w.state.safetensors", LM, False)
    with one_writer(outputs):  # a first training holds its outputs
        refused(capsys, tl(task, "w.safetensors"), task, "another training")
        with pytest.raises(OptionsError, match=f"pid {os.getpid()}"):
            with one_writer(outputs):
                pass
    assert not list(task.glob("*.lock"))  # released and removed
    assert cli(capsys, tl(task, "w.safetensors", steps=1))[0] == EXIT_OK


# --- 4. Ctrl-C and SIGTERM save the state; SIGKILL after a checkpoint loses only the steps since -------
def signal_at_step(monkeypatch, signum: int, call: int) -> None:
    """Send ``signum`` to this process during training step ``call`` (1-based), as a user's Ctrl-C."""
    import vemi_eval.training.lm as lm

    real, calls = lm.drop_user_tokens, []

    def drop(*args, **kw):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real(*args, **kw)

    monkeypatch.setattr(lm, "drop_user_tokens", drop)


def same_weights(a: Path, b: Path) -> bool:
    x, y = read_safetensors(a), read_safetensors(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def resume_line(err: str) -> list[str]:
    command = err.split("continue with `")[1].split("`")[0]
    args = shlex.split(command)
    assert args[:3] == ["vemi-eval", "train", "lm"] and "--fresh" not in args
    return args[1:]


def test_ctrl_c_saves_the_state_prints_the_resume_command_and_resumes_exactly(task, capsys, monkeypatch):
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or a background job
    assert cli(capsys, tl(task, "full.safetensors"))[0] == EXIT_OK
    signal_at_step(monkeypatch, signal.SIGINT, 2)
    code, _, err = cli(capsys, tl(task, "cut.safetensors", "--fresh"))
    assert code == EXIT_INTERRUPTED and "interrupted at step 2" in err, err
    assert json.loads(load_meta(task / "cut.state.safetensors"))["step"] == 2
    assert not (task / "cut.safetensors").exists() and not list(task.glob("*.lock"))
    monkeypatch.undo()
    code, out, err = cli(capsys, resume_line(err))
    assert code == EXIT_OK and "4 steps" in out, err
    assert json.loads((task / "cut.json").read_text())["resumed_from"]["step"] == 2
    assert same_weights(task / "full.safetensors", task / "cut.safetensors")
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handlers are restored


def load_meta(state: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(state), framework="pt") as f:
        return f.metadata()["state"]


DRIVER = """
import os, signal, sys
import vemi_eval.training.lm as lm
from vemi_eval.cli import main
signum, at = int(sys.argv[1]), int(sys.argv[2])
lm.train_lm.__kwdefaults__["checkpoint_every_s"] = -1.0  # a checkpoint after every step
real, calls = lm.drop_user_tokens, []
def drop(*a, **k):
    calls.append(1)
    if len(calls) == at:
        os.kill(os.getpid(), signum)
    return real(*a, **k)
lm.drop_user_tokens = drop
main(sys.argv[3:])
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_training_process_resumes_where_it_stopped(task, capsys, signum):
    assert cli(capsys, tl(task, "full.safetensors"))[0] == EXIT_OK
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_TORCH_COMPILE": "1"}
    args = tl(task, "cut.safetensors")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(int(signum)), "3", *args], env=env, capture_output=True, text=True
    )
    state = task / "cut.state.safetensors"
    if signum == signal.SIGKILL:  # no chance to save: the checkpoint after step 2 is what is left
        assert proc.returncode == -signal.SIGKILL
        assert json.loads(load_meta(state))["step"] == 2
        assert list(task.glob("*.lock"))  # a dead holder's lock file stays; its lock went with it
    else:
        assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
        assert "interrupted at step 3" in proc.stderr and "continue with `vemi-eval train lm" in proc.stderr
        assert json.loads(load_meta(state))["step"] == 3
    code, out, err = cli(capsys, args)  # the same command
    assert code == EXIT_OK, err
    assert same_weights(task / "full.safetensors", task / "cut.safetensors")


# --- 6. write failures and corrupt states --------------------------------------------------------------
def test_a_failed_write_after_training_is_exit_5_and_keeps_the_state(task, capsys, monkeypatch):
    import vemi_eval.training.state as st

    real = st.write_atomic

    def full_disk(path, data):
        if not str(path).endswith(".state.safetensors"):
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(st, "write_atomic", full_disk)
    code, _, err = cli(capsys, tl(task, "w.safetensors"))
    assert code == EXIT_STORAGE and "No space left" in err and "state is kept" in err, err
    assert json.loads(load_meta(task / "w.state.safetensors"))["step"] == 4
    monkeypatch.undo()
    code, out, err = cli(capsys, tl(task, "w.safetensors"))  # space again: the same command finishes
    assert code == EXIT_OK and json.loads((task / "w.json").read_text())["resumed_from"]["step"] == 4


def test_a_corrupt_state_names_the_file_and_fresh(task, capsys):
    assert cli(capsys, tl(task, "w.safetensors", "--state", str(task / "s.safetensors"), steps=1))[0] == 0
    state = task / "s.safetensors"
    state.write_bytes(state.read_bytes()[:200])  # torn
    err = refused(capsys, tl(task, "v.safetensors", "--state", str(state)), task, "--fresh")
    assert str(state) in err
    code, _, err = cli(capsys, tl(task, "v.safetensors", "--state", str(state), "--fresh"))
    assert code == EXIT_OK, err


# --- 7, 8, 10. options checked before any work -----------------------------------------------------
@pytest.mark.parametrize(
    "extra, match",
    [
        (["--threads", "0"], "--threads"),
        (["--seed", "-1"], "--seed"),
        (["--batch-size", "0"], "--batch-size"),
        (["--seq-len", "0"], "--seq-len"),
        (["--lr", "-1"], "--lr"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--minutes", "nan"], "--minutes"),
        (["--lr", "inf"], "--lr"),
        (["--device", "tpu"], "--device"),
        (["--option", "distill", "--option-arg", "distill.temperature=nan"], "finite"),
    ],
)
def test_lm_options_are_checked_before_any_work(task, capsys, extra, match):
    refused(capsys, tl(task, "w.safetensors", *extra), task, match)
    assert not (task / "w.safetensors").exists()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--seed", "-1"], "--seed"),
        (["--minutes", "nan"], "--minutes"),
        (["--option", "ervq", "--option", "multi-rate"], "cannot be combined"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_codec_options_are_checked_before_any_work(task, capsys, extra, match):
    args = ["train", "codec", "--out", str(task / "c.safetensors"), "--steps", "1", *extra]
    refused(capsys, args, task, match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_on_a_machine_without_it_is_refused(task, capsys):
    refused(capsys, tl(task, "w.safetensors", "--device", "cuda"), task, "CUDA is not available")
    args = ["train", "codec", "--out", str(task / "c.safetensors"), "--device", "cuda"]
    refused(capsys, args, task, "CUDA is not available")


def test_init_from_with_nan_weights_or_a_broken_sidecar(task, capsys):
    assert cli(capsys, tl(task, "w.safetensors", steps=1))[0] == EXIT_OK
    tensors = load_file(str(task / "w.safetensors"))
    tensors["text_linear.weight"][0, 0] = float("nan")
    save_file(tensors, str(task / "nan.safetensors"))
    refused(
        capsys, tl(task, "v.safetensors", "--init-from", str(task / "nan.safetensors")), task, "non-finite"
    )
    shutil.copy(task / "w.safetensors", task / "broken.safetensors")
    (task / "broken.json").write_text("{broken")
    args = [
        "train",
        "codec",
        "--out",
        str(task / "c.safetensors"),
        "--init-from",
        str(task / "broken.safetensors"),
    ]
    err = refused(capsys, args, task, "cannot read its sidecar")
    assert "broken.json" in err


# --- 9. token folders --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "grid, manifest, match",
    [
        (torch.zeros(5, 0, dtype=torch.int16), None, "T >= 1"),
        (torch.full((5, 8), -1, dtype=torch.int16), None, "only -1"),
        (None, "{not json", "cannot read"),
        (None, "[1, 2]", "expected an object"),
    ],
    ids=["no-frames", "all-minus-one", "manifest-not-json", "manifest-a-list"],
)
def test_unusable_token_folders_are_one_line(task, capsys, grid, manifest, match):
    folder = task / "grids"
    if grid is not None:
        save_file({"bad": grid}, str(folder / "q.safetensors"))
    if manifest is not None:
        (folder / "manifest.json").write_text(manifest)
    with pytest.raises(TrainDataError, match=match):
        load_token_folder(folder, 5)
    refused(capsys, tl(task, "w.safetensors"), task, match)


def test_ctrl_c_in_the_codec_trainer_saves_its_state_and_resumes_exactly(tmp_path):
    from vemi_eval.training.codec import train_codec
    from vemi_eval.training.interrupt import TrainingInterrupted, stop_on_signal

    from .test_codec_training import _FakeAudio

    def run(name: str, interrupt_at: int | None = None) -> Path:
        def log(msg: str) -> None:
            if interrupt_at is not None and msg.startswith(f"step {interrupt_at} "):
                os.kill(os.getpid(), signal.SIGINT)

        fake, out = _FakeAudio(batch_size=2), tmp_path / f"{name}.safetensors"
        with stop_on_signal() as stop:
            train_codec(out, minutes=1, recipe=fake.recipe, max_steps=4, evaluate=False, audio=fake.inner,
                        log=log, log_every=1, checkpoint_every_s=1e9, stop=stop)  # fmt: skip
        return out

    straight = run("straight")
    with pytest.raises(TrainingInterrupted, match="step 2") as cut:
        run("cut", interrupt_at=2)  # no periodic checkpoint: only the signal's save is there
    assert cut.value.state_path == tmp_path / "cut.state.safetensors" and cut.value.state_path.is_file()
    resumed = run("cut")
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- one error type for a resume under another recipe; no ValueError turned into a usage error ----------
def test_a_resume_under_another_recipe_is_one_line_for_the_lm(task, capsys):
    assert cli(capsys, tl(task, "w.safetensors", steps=2))[0] == EXIT_OK  # leaves its state beside --out
    err = refused(capsys, tl(task, "w.safetensors", "--overwrite", "--lr", "1e-4"), task, "another recipe")
    assert "--fresh" in err


def test_the_codec_command_maps_a_recipe_mismatch_to_exit_2_and_lets_a_bug_through(task, capsys, monkeypatch):
    import vemi_eval.training.codec as codec_trainer
    from vemi_eval.training.state import RecipeMismatchError

    def mismatch(*_a, **_k):
        raise RecipeMismatchError("c.state.safetensors holds a run with another recipe (a != b)")

    args = ["train", "codec", "--out", str(task / "c.safetensors"), "--steps", "1", "--no-heldout-eval"]
    monkeypatch.setattr(codec_trainer, "train_codec", mismatch)
    refused(capsys, args, task, "another recipe")

    def bug(*_a, **_k):
        raise ValueError("a bug inside the training")

    monkeypatch.setattr(codec_trainer, "train_codec", bug)
    with pytest.raises(ValueError, match="a bug inside the training"):  # a traceback, not "usage error"
        main(args)
