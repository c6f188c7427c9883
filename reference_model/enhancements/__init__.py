"""Enhancement flags: each one a small transform of the model, readable on its own (gpt-fast style).

A flag is written ``name`` or ``name=value``; a list of flags is comma-separated ("sdpa,int8,gqa=4").
ONE module of this package holds each enhancement: its algorithm, its flag (a :class:`FlagSpec`
registered here) and its ``apply``. Shared libraries stay apart (``reference_model.quant``: packing,
RTN/GPTQ/AWQ, calibration; used by the weight and KV-cache flags).

    attention.py         attn=eager|sdpa|flash        gqa.py              gqa=G
    quantize.py          int8, int4, codec-int8/4     kv_compress.py      kv-compress=int8[:W]
    mod.py               mod=C (Mixture of Depths)     dynamic_bitrate.py  dynamic-bitrate=MIN[-MAX]
    speculative.py       speculative=K                compile.py          compile[=MODE]
    cuda_graphs.py       cuda-graphs                  continuous_batching.py  continuous-batching

Two stages, and within each an ``order`` the flags declare: :func:`parse_flags` returns the flags in
that canonical order whatever order the user wrote them in, and :func:`reference_model.build_duplex`
applies them so.

* ``stage="model"``: ``apply(lm, codec, value) -> FlagReport`` rewrites modules or weights *before* any
  streaming state (KV caches, codec buffers) is allocated: attention backend, GQA, quantization, Mixture
  of Depths, KV-cache kind, codec bitrate policy.
* ``stage="runtime"``: ``apply(duplex, value) -> FlagReport`` wraps the stages of the built
  :class:`~reference_model.duplex.DuplexModel` (speculative decoding, torch.compile, CUDA graphs).

Each ``apply`` returns a typed entry (:mod:`reference_model.report`) saying what it did and, for flags
that count things, the live counters; ``duplex.report()`` gathers them. The model never imports the
harness; the harness reads this registry, the build function, the report and
:mod:`reference_model.probes`, nothing else of the model's internals.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

STAGES = ("model", "runtime")  # applied in this order


class FlagError(ValueError):
    """An unknown flag, a bad value, or flags that cannot combine."""


@dataclass(frozen=True)
class FlagSpec:
    name: str
    module: str  # module in this package holding ``apply``
    stage: str  # "model" or "runtime"
    summary: str
    parse: Callable[[str | None], Any] = lambda v: True
    default: str | None = None  # value used when written without "=value"
    conflicts: frozenset[str] = field(default_factory=frozenset)
    group: str | None = None  # at most one flag of a group (e.g. attention backend)
    requires_cuda: bool = False
    cuda_values: frozenset[str] = field(default_factory=frozenset)  # values that need CUDA (attn=flash)
    # Place within the stage (lower first). Why each flag sits where it does is said in its module:
    # e.g. gqa rewrites the fp projections before quantization packs them, compile before cuda-graphs.
    order: int = 50
    apply_name: str = "apply"  # the function of ``module`` applying this flag (a module may hold several)

    def load_apply(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.apply_name)


@dataclass(frozen=True)
class Flag:
    name: str
    value: Any
    raw: str

    def __str__(self) -> str:
        return self.raw


FLAGS: dict[str, FlagSpec] = {}


def register(spec: FlagSpec) -> FlagSpec:
    if spec.name in FLAGS:
        raise RuntimeError(f"flag {spec.name!r} registered twice")
    FLAGS[spec.name] = spec
    return spec


def available_flags() -> dict[str, FlagSpec]:
    """Every flag the model implements, by name."""
    _load_all()
    return dict(FLAGS)


def canonical_key(name: str) -> tuple[int, int, str]:
    """Where flag ``name`` is applied: by stage, then by its declared order (name breaks ties)."""
    spec = FLAGS[name]
    return STAGES.index(spec.stage), spec.order, name


def parse_flags(flags: str | Iterable[str] | None, *, device: str = "cpu") -> list[Flag]:
    """Parse and validate flags, returned in canonical order (:func:`canonical_key`); raise FlagError
    with one line saying what is wrong."""
    _load_all()
    if flags is None:
        return []
    items = [f.strip() for f in (flags.split(",") if isinstance(flags, str) else flags)]
    out: list[Flag] = []
    for raw in items:
        if not raw:
            continue
        name, _, value = raw.partition("=")
        name = name.strip()
        spec = FLAGS.get(name)
        if spec is None:
            known = ", ".join(sorted(FLAGS))
            hint = suggest_flag(name)
            hint = f"did you mean {hint!r}? " if hint else ""
            raise FlagError(f"unknown flag {name!r} ({hint}known flags: {known})")
        text = value.strip() if "=" in raw else spec.default
        try:
            parsed = spec.parse(text)
        except (TypeError, ValueError) as exc:
            raise FlagError(f"bad value for flag {name!r}: {text!r} ({exc})") from None
        if (spec.requires_cuda or text in spec.cuda_values) and not str(device).startswith("cuda"):
            raise FlagError(f"flag {raw.strip()!r} needs a CUDA device (got device={device!r})")
        out.append(Flag(name, parsed, raw))
    _check_combination(out)
    return sorted(out, key=lambda f: canonical_key(f.name))


def _takes_value(spec: FlagSpec, value: str) -> bool:
    """Whether ``value`` is one of the flag's own values (a flag that takes any text takes none)."""

    def parses(text: str) -> bool:
        try:
            spec.parse(text)
        except (TypeError, ValueError):
            return False
        return True

    return parses(value) and not parses("\x00 not a value")


def suggest_flag(name: str) -> str | None:
    """What an unknown flag name most likely meant: ``flash`` -> ``attn=flash`` (a value written as a
    name), ``speculatve`` -> ``speculative`` (a misspelling)."""
    import difflib

    # the LM's flags before the codec's: "gptq" more likely means int4=gptq than codec-int4=gptq
    for spec in sorted(FLAGS.values(), key=lambda s: (s.name.startswith("codec-"), s.name)):
        if _takes_value(spec, name):
            return f"{spec.name}={name}"
    close = difflib.get_close_matches(name, sorted(FLAGS), n=1, cutoff=0.75)
    return close[0] if close else None


def _check_combination(flags: Sequence[Flag]) -> None:
    names = [f.name for f in flags]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise FlagError(f"flag {n!r} given twice")
        seen.add(n)
    groups: dict[str, str] = {}
    for n in names:
        g = FLAGS[n].group
        if g is not None:
            if g in groups:
                raise FlagError(f"flags {groups[g]!r} and {n!r} cannot combine (both choose the {g})")
            groups[g] = n
    for n in names:
        bad = FLAGS[n].conflicts & seen
        if bad:
            raise FlagError(f"flags {n!r} and {sorted(bad)[0]!r} cannot combine")


def _load_all() -> None:
    # Every module of this package registers its flags on import; importing is cheap because each
    # keeps its optional dependencies (flash_attn, say) inside ``apply``.
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    bad = sorted(n for n, s in FLAGS.items() if s.stage not in STAGES)
    if bad:
        raise RuntimeError(f"flag {bad[0]!r} declares an unknown stage (known: {', '.join(STAGES)})")
