"""`vemi-eval sweep`: one suite x a grid of flag sets (x seeds x devices), one Ray task per variant.

A sweep point is ONE complete suite run: the suite's baseline plus ONE variant, measured side by side by
the same process on the same machine, so every ratio to the baseline compares like with like (never
across machines). The points are spread over a Ray cluster, or a local Ray instance: Ray is the
distributed engine; nothing here schedules, places or retries work by itself.

Why the runner's Python API in a fresh Ray worker (``max_calls=1``) rather than a subprocess: a fresh
interpreter per run keeps torch's thread pool, the allocator's high-water mark (peak memory is measured
on it), the CUDA context and the logging handlers of one run away from the next, which is the isolation a
subprocess would give; a worker that crashes (segfault, OOM kill) takes only its own run down and Ray
reports it for that task. Calling ``run_suite`` directly returns the outcome without parsing a CLI.

Files: a worker runs in a scratch directory of its own node and sends the run directory's files back; the
driver writes them under ``OUT/<slug>/``, so OUT needs no shared filesystem. What every node must have:
the same vemi-eval (its git commit is recorded and compared), and the checkpoints, configs and data at the
paths the suite names. The suite file itself travels with the task (by content; its hash is checked).

Sweep file (TOML, data only; an alternative to --grid/--seeds/--devices, which add to / override it)::

    [sweep]
    suite = "memory"                  # required: suite name, or a path relative to this file
    description = "..."               # optional
    seeds = [0, 1]                    # each variant once per seed (default: the suite's seed)
    devices = ["cpu"]                 # each variant once per device: cpu | cuda (default: the suite's)
    quick = true                      # the suite's quick settings
    threads = 1                       # torch threads per run (and CPUs reserved per run)
    preset = "tiny"                   # config, checkpoint, codec_checkpoint, data: as `vemi-eval run`

    [[variants]]                      # named flag sets, each one run beside the baseline
    name = "int8-gptq"
    flags = ["int8=gptq"]

    [grid]                            # the cartesian product of the axes; "" = the axis off
    weights = ["", "int8=rtn", "int4=awq"]
    kv = ["", "kv-compress"]          # -> int8=rtn | int4=awq | kv-compress | int8=rtn,kv-compress | ...

Without any flag set (no --grid, [[variants]] or [grid]), the suite's own non-baseline variants are the
sweep: `vemi-eval sweep memory` runs each of them beside the baseline in a task of its own.

Modules: sweepfile (the sweep file), plan (flag sets -> points), worker (one point in a Ray worker),
cluster (Ray itself), summary (sweep.json), driver (the points as Ray tasks); the command line is
vemi_eval/cli/sweep.py.
"""

from .cluster import import_ray
from .driver import SweepOptions, SweepOutcome, run_sweep
from .plan import SweepPlan, SweepPoint, build_plan, expand_axes, parse_grid, plan_sweep, slugify
from .summary import FAILED, INCOMPLETE, INVALID, SWEEP_FILE, VALID
from .sweepfile import read_sweep_file

__all__ = [
    "FAILED",
    "INCOMPLETE",
    "INVALID",
    "SWEEP_FILE",
    "VALID",
    "SweepOptions",
    "SweepOutcome",
    "SweepPlan",
    "SweepPoint",
    "build_plan",
    "expand_axes",
    "import_ray",
    "parse_grid",
    "plan_sweep",
    "read_sweep_file",
    "run_sweep",
    "slugify",
]
