"""Recipe options of the LM trainer: each a small transform of one plain training step.

An option is a class with the hooks below; every hook's default changes nothing, so a run without
options is the plain Moshi objective, and an option overrides only the hook it needs:

- ``setup(ctx)``: once, after the student is built (load a teacher, tokenise extra data);
- ``grids(step, progress, grids)``: which token grids this step samples its crops from (a curriculum);
- ``transform(batch, plan, grids)``: the batch after cropping (``plan``: which grid and start frame
  each item came from; augment the user's streams);
- ``loss(lm, batch, frames, parts)``: the step's loss (a distillation term beside the hard labels);
- ``objective(lm, batch, frames)``: a loss that replaces Moshi's for the step (preference optimisation;
  None keeps Moshi's);
- ``trainable()``: parameters of the option's own (a conditioning's projection), trained with the model
  and kept in the resume state; ``input_offset(lm, batch)``: added to the summed input embeddings, as
  Moshi's conditioners add theirs; ``export(lm, tensors)``: the shipped weights (a conditioning folded
  into the plain model, so the checkpoint stays a Moshi-format one);
- ``recipe()``: its parameters, part of the recipe digest (a resume refuses another set);
- ``report()``: figures for the sidecar.

An option that draws random numbers uses its own generator (``self.rng``, seeded from the run's seed and
its name), so the crops every arm of a paired experiment sees are the same; its state is saved with the
trainer's. Options are declared for the registry in vemi_eval/training/recipes.py and built here by name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .base import CorpusRef, LMOption, OptionContext, OptionError  # noqa: F401  (re-exported)


def option_classes() -> dict[str, type[LMOption]]:
    """Option name -> class (imported lazily: a teacher or a corpus is only touched when asked for)."""
    from .curriculum import LatencyCurriculum
    from .distill import Distill
    from .dpo import Dpo
    from .noise_aug import NoiseAugmentation
    from .prosody import ProsodyCond
    from .speaker import SpeakerCond

    classes = (Distill, LatencyCurriculum, NoiseAugmentation, SpeakerCond, Dpo, ProsodyCond)
    return {c.name: c for c in classes}


def parse_value(text: str, like: Any) -> Any:
    """An option argument from the command line, typed after the field's default."""
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise OptionError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(like, tuple):
        parts = [p for p in text.split(",") if p.strip()]
        inner = like[0] if like else ""
        return tuple(parse_value(p.strip(), inner) for p in parts)
    try:
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            value = float(text)
    except ValueError:
        raise OptionError(f"expected a number, got {text!r}") from None
    if isinstance(like, float):
        if not math.isfinite(value):
            raise OptionError(f"expected a finite number, got {text!r}")
        return value
    return text


def build_options(
    names: Sequence[str],
    args: dict[str, dict[str, str]] | None = None,
    trainer_args: dict[str, Any] | None = None,
) -> list[LMOption]:
    """Options by name with their arguments (``args[name][field] = text`` from ``--option-arg
    name.field=value``; ``trainer_args`` are typed values of named trainer flags such as ``teacher``)."""
    classes = option_classes()
    args = {k: dict(v) for k, v in (args or {}).items()}
    unknown = [n for n in list(names) + list(args) if n not in classes]
    if unknown:
        raise OptionError(f"unknown LM recipe option {unknown[0]!r} (known: {', '.join(sorted(classes))})")
    extra = [n for n in args if n not in names]
    if extra:
        raise OptionError(f"--option-arg for {extra[0]!r}, which is not among the --option names")
    if len(set(names)) != len(names):
        raise OptionError("an --option is given twice")
    out = []
    for name in names:
        cls = classes[name]
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for key, text in args.get(name, {}).items():
            if key not in defaults:
                raise OptionError(f"option {name!r} has no argument {key!r} (known: {', '.join(defaults)})")
            try:
                kwargs[key] = parse_value(text, defaults[key])
            except OptionError as e:
                raise OptionError(f"--option-arg {name}.{key}: {e}") from None
        for key, value in (trainer_args or {}).items():
            if key in defaults and value is not None:
                kwargs[key] = value
        try:
            out.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise OptionError(f"option {name!r}: {e}") from None
    _check_combination(out)
    return out


def with_default_user_noise(options: list[LMOption]) -> list[LMOption]:
    """The bundled recipe's options: ``options`` and its user-channel noise (noise_aug.default_user_noise),
    unless an explicit ``noise-aug`` option sets the noise itself."""
    from .noise_aug import NoiseAugmentation, default_user_noise

    if any(o.name == NoiseAugmentation.name for o in options):
        return options
    for o in options:
        if type(o).grids is not LMOption.grids:
            why = "replaces the training grids that the recipe's user-channel noise augments"
        elif type(o).objective is not LMOption.objective:
            why = "replaces the loss: the recipe's user-channel noise would change nothing"
        else:
            continue
        raise OptionError(f"option {o.name} {why}; add --no-user-noise")
    return [*options, default_user_noise()]


def _check_combination(options: list[LMOption]) -> None:
    # Two options that both choose the grids a step samples would silently override each other.
    choosers = [o.name for o in options if type(o).grids is not LMOption.grids]
    if len(choosers) > 1:
        raise OptionError(f"options {' and '.join(choosers)} both choose the training data; use one")
    needs_base = [o.name for o in options if getattr(o, "needs_base_grids", False)]
    if choosers and needs_base:
        raise OptionError(
            f"option {needs_base[0]} augments the plain training grids; {choosers[0]} replaces them"
        )


def parse_option_args(pairs: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["distill.temperature=2", ...]`` -> ``{"distill": {"temperature": "2"}}``."""
    out: dict[str, dict[str, str]] = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        name, dot, fieldname = key.partition(".")
        if not eq or not dot or not name or not fieldname:
            raise OptionError(f"--option-arg {p!r}: expected OPTION.ARGUMENT=VALUE")
        out.setdefault(name.strip(), {})[fieldname.strip()] = value.strip()
    return out
