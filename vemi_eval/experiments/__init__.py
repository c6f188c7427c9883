"""`vemi-eval experiment`: a training-side enhancement measured as a paired experiment.

One file, ``suites/experiments/<name>.toml``: an ordinary suite (how the arms are measured) plus an
``[experiment]`` table (how they are trained). Every arm is a set of recipe options
(vemi_eval/training/recipes.py), trained by the same trainer from the same start for the same steps and
seeds; the first arm is the baseline. The runner trains each arm x seed through the trainer's CLI (each
training resumes from its own state, so a killed experiment loses at most a few minutes), then runs the
suite with one variant per arm whose checkpoints are its seeds' (the runner pools the seeds as
replicates), and writes the run where `vemi-eval matrix` reads it.

    [experiment]
    enhancement = "3.3"             # the registry entry it measures
    trainer = "codec"               # codec | lm
    init_from = "reference_model/weights/tiny_codec.safetensors"   # optional warm start (all arms)
    steps = 200                     # per arm and seed: equal steps
    seeds = [0, 1]
    train_args = ["--recipe", "v1-continue"]                      # optional, the same for every arm
    [[experiment.arm]]
    name = "baseline"
    options = []
    [[experiment.arm]]
    name = "ervq"
    options = ["ervq"]

Modules: spec (the file, validated), train (the arm x seed trainings, local or as Ray tasks), suite (the
measuring suite with its generated variants); the command line is vemi_eval/cli/experiment.py.
"""

from .spec import Arm, Experiment, read_experiment

__all__ = ["Arm", "Experiment", "read_experiment"]
