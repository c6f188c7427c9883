"""The experiment runner: the file is validated before any work, the trainings planned equal, the measuring
suite generated with one variant per arm, finished trainings recognised (resume) and failures reported."""

from __future__ import annotations

import json
import sys

import pytest
import tomllib

from vemi_eval.errors import SuiteError
from vemi_eval.experiments import read_experiment
from vemi_eval.experiments.suite import measuring_suite
from vemi_eval.experiments.train import TrainingFailed, is_done, plan_trainings, train_all
from vemi_eval.training import recipes

GOOD = """
[suite]
name = "exp-test"
description = "a test experiment"

[codec]
limit = 2

[experiment]
enhancement = "3.3"
trainer = "codec"
steps = 7
seeds = [0, 1]
train_args = ["--recipe", "v1-continue"]

[[experiment.arm]]
name = "baseline"
options = []

[[experiment.arm]]
name = "enhanced"
options = ["test-option"]
"""


@pytest.fixture(autouse=True)
def declared_option(monkeypatch):
    opt = recipes.RecipeOption("test-option", "3.3", "codec", "a test option", "nothing")
    monkeypatch.setattr(recipes, "RECIPE_OPTIONS", (*recipes.RECIPE_OPTIONS, opt))


def _write(tmp_path, text: str):
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_reads_a_good_file(tmp_path):
    e = read_experiment(_write(tmp_path, GOOD))
    assert (e.enhancement, e.trainer, e.steps, e.seeds) == ("3.3", "codec", 7, (0, 1))
    assert [a.name for a in e.arms] == ["baseline", "enhanced"] and e.baseline.options == ()


@pytest.mark.parametrize(
    "change, message",
    [
        (('enhancement = "3.3"', 'enhancement = "9.9"'), "not in the registry"),
        (('trainer = "codec"', 'trainer = "gan"'), "trainer"),
        (("steps = 7", "steps = 0"), "steps"),
        (("seeds = [0, 1]", "seeds = [1, 1]"), "distinct"),
        (('options = ["test-option"]', 'options = ["no-such"]'), "unknown recipe option 'no-such'"),
        (('options = ["test-option"]', "options = []"), "are the same"),
        (('name = "enhanced"', 'name = "baseline"'), "distinct"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, change, message):
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_experiment(_write(tmp_path, GOOD.replace(*change)))


def test_a_plain_suite_is_not_an_experiment(tmp_path):
    with pytest.raises(SuiteError, match=r"no \[experiment\] table"):
        read_experiment(_write(tmp_path, GOOD[: GOOD.index("[experiment]")]))


def test_an_option_of_the_other_trainer_is_refused(tmp_path):
    with pytest.raises(SuiteError, match="is of the codec trainer"):
        read_experiment(_write(tmp_path, GOOD.replace('trainer = "codec"', 'trainer = "lm"')))


def test_trainings_are_planned_equal_and_the_suite_names_each_arms_seeds(tmp_path):
    e = read_experiment(_write(tmp_path, GOOD))
    jobs = plan_trainings(e, tmp_path)
    assert [(j.arm.name, j.seed) for j in jobs] == [
        ("baseline", 0),
        ("baseline", 1),
        ("enhanced", 0),
        ("enhanced", 1),
    ]
    for j in jobs:  # same steps, seeds, common args; only the options differ
        argv = list(j.argv)
        assert argv[argv.index("--steps") + 1] == "7" and "v1-continue" in argv
        assert ("--option" in argv) == (j.arm.name == "enhanced")
    doc = tomllib.loads(measuring_suite(e, jobs, tmp_path).read_text())
    assert [v["name"] for v in doc["variants"]] == ["baseline", "enhanced"]
    names = [n.split("-")[:3] for n in doc["variants"][1]["codec_checkpoint"]]
    assert names == [["codec", "test", "option"]] * 2 and all(j.out.parent == tmp_path for j in jobs)
    assert doc["experiment"]["enhancement"] == "3.3"  # the stored suite text says how the arms were made


def test_the_same_training_has_the_same_path_in_every_experiment(tmp_path):
    e = read_experiment(_write(tmp_path, GOOD))
    other = read_experiment(_write(tmp_path, GOOD.replace('name = "enhanced"', 'name = "renamed"')))
    assert [j.out for j in plan_trainings(e, tmp_path)] == [j.out for j in plan_trainings(other, tmp_path)]
    longer = read_experiment(_write(tmp_path, GOOD.replace("steps = 7", "steps = 8")))
    assert not set(j.out for j in plan_trainings(e, tmp_path)) & set(
        j.out for j in plan_trainings(longer, tmp_path)
    )


def test_a_training_is_done_only_with_its_steps_and_options(tmp_path):
    e = read_experiment(_write(tmp_path, GOOD))
    job = plan_trainings(e, tmp_path)[2]
    assert not is_done(job, 7)
    job.out.write_bytes(b"weights")
    job.sidecar.write_text(json.dumps({"steps": 7, "final": True, "trained_with": ["test-option"]}))
    assert is_done(job, 7)
    job.sidecar.write_text(json.dumps({"steps": 5, "final": True, "trained_with": ["test-option"]}))
    assert not is_done(job, 7)
    job.sidecar.write_text(json.dumps({"steps": 7, "final": True, "trained_with": []}))
    assert not is_done(job, 7)
    job.sidecar.write_text(json.dumps({"steps": 9, "final": True, "trained_with": ["test-option"]}))
    assert not is_done(job, 7)  # a longer run is not this experiment's: the arms are equal in steps


def test_a_failed_training_stops_the_experiment_and_keeps_the_others(tmp_path):
    e = read_experiment(_write(tmp_path, GOOD))
    jobs = plan_trainings(e, tmp_path)
    for j in jobs[:2]:  # the baseline's trainings are done
        j.out.write_bytes(b"w")
        j.sidecar.write_text(json.dumps({"steps": 7, "final": True, "trained_with": []}))
    failing = [type(j)(j.arm, j.seed, j.out, (sys.executable, "-c", "raise SystemExit(3)")) for j in jobs]
    with pytest.raises(TrainingFailed, match="enhanced seed 0 failed .exit 3."):
        train_all(e, failing, lambda m: None)
    assert all(j.out.is_file() for j in jobs[:2])


def test_every_recipe_option_is_declared_once():
    names = [r.name for r in recipes.RECIPE_OPTIONS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_an_untrained_arm_and_an_arm_of_another_shape(tmp_path):
    (tmp_path / "teacher.safetensors").write_bytes(b"t")
    (tmp_path / "student.json").write_text("{}")
    text = GOOD.replace(
        '[[experiment.arm]]\nname = "baseline"\noptions = []',
        '[[experiment.arm]]\nname = "teacher"\ncheckpoint = "teacher.safetensors"\n\n'
        '[[experiment.arm]]\nname = "student"\nconfig = "student.json"\ntrain_args = ["--lr", "1"]',
    )
    e = read_experiment(_write(tmp_path, text))
    jobs = plan_trainings(e, tmp_path)
    assert {j.arm.name for j in jobs} == {"student", "enhanced"}  # the teacher is not trained
    student = next(j for j in jobs if j.arm.name == "student")
    assert "--config" in student.argv and list(student.argv[-4:-2]) == ["--lr", "1"]
    doc = tomllib.loads(measuring_suite(e, jobs, tmp_path).read_text())
    teacher, student_v = doc["variants"][0], doc["variants"][1]
    assert teacher["codec_checkpoint"] == "teacher.safetensors" and student_v["config"] == "student.json"
    trained_teacher = text.replace(
        'checkpoint = "teacher.safetensors"', 'checkpoint = "teacher.safetensors"\noptions = ["test-option"]'
    )
    with pytest.raises(SuiteError, match="not trained"):
        read_experiment(_write(tmp_path, trained_teacher))


def test_a_warm_start_replaced_mid_experiment_stops_it(tmp_path):
    init = tmp_path / "init.safetensors"
    init.write_bytes(b"one")
    e = read_experiment(_write(tmp_path, GOOD.replace("steps = 7", f'steps = 7\ninit_from = "{init}"')))
    jobs = plan_trainings(e, tmp_path)
    init.write_bytes(b"two")  # the planned keys name trainings from "one"
    with pytest.raises(TrainingFailed, match="changed during the experiment"):
        train_all(e, jobs, lambda m: None)


# --- issue 32: everything an experiment could refuse is refused before the first training ----------------
def _experiment_cli(tmp_path, monkeypatch, capsys, text: str, *args: str) -> tuple[int, str]:
    """`experiment run` in ``tmp_path``; no training may start."""
    from vemi_eval.cli import main
    from vemi_eval.experiments import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "run_training", lambda *a: pytest.fail("a training started"))
    with pytest.raises(SystemExit) as done:
        main(["experiment", "run", str(_write(tmp_path, text)), *args])
    err = capsys.readouterr().err
    return done.value.code, err


@pytest.mark.parametrize(
    "change, args, message",
    [
        (None, ["--resume", "--overwrite"], "exclude each other"),
        (None, ["--threads", "0"], "--threads"),
        (None, ["--device", "tpu"], "--device"),
        (('train_args = ["--recipe", "v1-continue"]', 'train_args = ["--bogus-flag"]'), [], "--bogus-flag"),
        (
            ('train_args = ["--recipe", "v1-continue"]', 'train_args = "--recipe v1-continue"'),
            [],
            "list of strings",
        ),
        (("seeds = [0, 1]", "seeds = 5"), [], "seeds"),
        (("[[experiment.arm]]", "arm = 5\n[[nothing]]"), [], "arm"),
    ],
    ids=["resume-overwrite", "threads-0", "device-tpu", "bogus-flag", "args-a-string", "seeds-5", "arm-5"],
)
def test_experiment_run_refuses_before_any_training(tmp_path, monkeypatch, capsys, change, args, message):
    text = GOOD.replace(*change) if change else GOOD
    if change and change[0] == "[[experiment.arm]]":
        text = GOOD[: GOOD.index("[[experiment.arm]]")] + "arm = 5\n"
    code, err = _experiment_cli(tmp_path, monkeypatch, capsys, text, *args)
    assert code == 2 and message in err, err
    trainings = tmp_path / "runs" / "experiments" / "trainings"
    assert not trainings.exists() or not any(trainings.iterdir())


def test_a_finished_measuring_run_is_refused_before_training(tmp_path, monkeypatch, capsys):
    report = tmp_path / "reports" / "experiments" / "exp"
    report.mkdir(parents=True)
    (report / "results.json").write_text('{"committed": true}\n')
    code, err = _experiment_cli(tmp_path, monkeypatch, capsys, GOOD)
    assert code == 2 and "holds an earlier run" in err, err
    assert (report / "results.json").read_text() == '{"committed": true}\n'


def test_experiment_ray_without_ray_names_the_experiment(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    code, err = _experiment_cli(tmp_path, monkeypatch, capsys, GOOD, "--ray")
    assert code == 2 and "`vemi-eval experiment run --ray` needs Ray" in err, err


def test_an_arm_with_arguments_of_its_own_is_not_named_baseline(tmp_path):
    text = GOOD.replace('options = ["test-option"]', 'options = []\ntrain_args = ["--lr", "1e-4"]')
    jobs = plan_trainings(read_experiment(_write(tmp_path, text)), tmp_path)
    assert [j.out.name.split("-s")[0] for j in jobs[::2]] == ["codec-baseline", "codec-enhanced"]
