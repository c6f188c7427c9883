"""results.json says whether the LM and codec weights are trained (which file) or random."""

from __future__ import annotations

from dataclasses import replace

from reference_model.lm import load_lm
from reference_model.lm.load import BUNDLED
from vemi_eval.variant_models import ModelSpec, weights_provenance


def test_provenance_of_bundled_given_and_random_weights(tmp_path):
    spec = ModelSpec(lm="tiny", codec="tiny", lm_checkpoint=None, codec_checkpoint=None)
    got = weights_provenance(spec)
    assert got.codec == "trained, bundled tiny_codec_istft_full2.safetensors"
    if BUNDLED["tiny"].is_file():
        assert got.lm == "trained, bundled tiny_lm.safetensors"
    else:
        assert got.lm.startswith("random")
    assert weights_provenance(replace(spec, lm_checkpoint="random")).lm == "random (asked for)"
    assert weights_provenance(replace(spec, lm="moshi-7b")).lm.startswith("random")
    assert (
        weights_provenance(replace(spec, lm_checkpoint="/x/w.safetensors")).lm
        == "checkpoint /x/w.safetensors"
    )


def test_loaded_lm_says_which_weights_it_has():
    assert load_lm("tiny", "random").checkpoint is None
    lm = load_lm("tiny")
    assert lm.checkpoint == (str(BUNDLED["tiny"]) if BUNDLED["tiny"].is_file() else None)


def test_results_name_the_bytes_that_ran_and_how_they_were_trained(tmp_path):
    """weights_files_of: path and sha256 of each part's file, and the sidecar's steps, recipe digest,
    data hash and starting weights; random weights have none."""
    import hashlib
    import json

    from reference_model import bundled_codec_weights
    from vemi_eval.variant_models import weights_files_of

    spec = ModelSpec(lm="tiny", codec="tiny", lm_checkpoint="random", codec_checkpoint=None)
    got = weights_files_of(spec)
    assert got["lm"] is None
    codec = bundled_codec_weights("tiny")
    assert got["codec"]["path"] == str(codec)
    assert got["codec"]["sha256"] == hashlib.sha256(codec.read_bytes()).hexdigest()

    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"weights")
    side = {
        "steps": 12,
        "recipe_digest": "abc",
        "recipe": {"data_sha256": "d" * 64, "init_from": {"path": "x", "sha256": "e" * 64}},
        "heldout": {"text_word_accuracy_teacher_forced": 0.5},
        "wall_time_s": 90.0,
        "device": "cpu",
        "threads": 1,
        "loss_history": [{"step": 5, "text": 2.0}, {"step": 9, "text": 1.0}, {"step": 12, "text": 0.5}],
    }
    (tmp_path / "w.json").write_text(json.dumps(side))
    lm = weights_files_of(replace(spec, lm_checkpoint=str(ckpt)))["lm"]
    assert lm["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert lm["sidecar"] == {
        "steps": 12,
        "recipe_digest": "abc",
        "data_sha256": "d" * 64,
        "init_from_sha256": "e" * 64,
        "heldout_text_word_accuracy_teacher_forced": 0.5,
        "training": {  # the loss halved from step 9 (the last point at or before 80%) to 12
            "steps": 12,
            "minutes": 1.5,
            "device": "cpu",
            "threads": 1,
            "converged": False,
            "fall_share_last_20pct": 0.5,
            "fall_loss": "text",
            "fall_steps": [9, 12],
            "loss_basis": "training loss (no held-out loss history is logged)",
        },
    }
    (tmp_path / "w.json").unlink()
    assert weights_files_of(replace(spec, lm_checkpoint=str(ckpt)))["lm"]["sidecar"] is None


def test_results_name_the_commit_the_run_began_on_not_one_made_while_it_ran(monkeypatch):
    from types import SimpleNamespace

    from vemi_eval import runner

    monkeypatch.setattr(runner, "environment", lambda threads: {"git_commit": "b" * 40, "git_dirty": False})
    job = SimpleNamespace(threads=1, source={"git_commit": "a" * 40, "git_dirty": True})
    env = runner.environment_of(job)
    assert (env["git_commit"], env["git_dirty"], env["git_commit_at_finish"]) == ("a" * 40, True, "b" * 40)
    job.source = {"git_commit": "b" * 40, "git_dirty": False}
    assert "git_commit_at_finish" not in runner.environment_of(job)
