"""A variant's model, built when a measurement first asks for it: once per (batch size, overrides), reset
on reuse, freed when the variant's measurements are done (vemi_eval/runner.py drives it)."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable
from typing import Any

from .random_weights import random_lm_file
from .suites import VariantDecl
from .variant_models import ModelSpec

log = logging.getLogger("vemi_eval.run")


class VariantBuilder:
    """VariantRef.build: builds the variant lazily, once per (batch size, overrides); resets on reuse.

    ``fresh=True`` frees what is cached for this variant, then builds a model the caller owns (not cached).
    """

    def __init__(self, decl: VariantDecl, spec: ModelSpec, seed: int, build_fn: Callable[[Any], Any]):
        self.decl, self.spec, self.seed, self.build_fn = decl, spec, seed, build_fn
        self.cache: dict[str, Any] = {}
        self._last: weakref.ref | None = None
        self._kernels_at_build: dict[str, Any] | None = None

    def __call__(self, batch_size: int = 1, fresh: bool = False, **overrides: Any) -> Any:
        key = repr((batch_size, sorted(overrides.items(), key=lambda kv: kv[0])))
        if not fresh and key in self.cache:
            model = self.cache[key]
            if hasattr(model, "reset"):
                model.reset()
            return model
        if fresh and self.cache:
            # a fresh build is one whose cost is being measured (peak memory, build time): nothing of
            # this variant may stay resident beside it
            self.release()
        import torch

        from reference_model import DuplexSpec

        fields = self.spec.duplex_fields()
        fields["dtype"] = getattr(torch, fields["dtype"])
        fields.update(flags=list(self.decl.flags), batch_size=batch_size, seed=self.seed)
        fields.update(overrides)
        # a large random LM is drawn once and read back from a file (the same values, seconds not minutes)
        cached = random_lm_file(fields["lm"], fields.get("lm_checkpoint"), self.seed, fields["dtype"])
        if cached is not None:
            fields["lm_checkpoint"] = str(cached)
        log.info("building variant %s (batch_size=%d, overrides=%s)", self.decl.name, batch_size, overrides)
        model = self.build_fn(DuplexSpec(**fields))
        self._note_kernels(model)
        if not fresh:
            self.cache[key] = model
        return model

    def _note_kernels(self, model: Any) -> None:
        from reference_model import DuplexModel

        if isinstance(model, DuplexModel):  # test fakes have no report
            self._last = weakref.ref(model)
            self._kernels_at_build = model.report().kernels()

    def kernels(self) -> dict[str, Any] | None:
        """The kernels the last model built actually ran (its report), or what it had run when built
        (a fresh model already freed)."""
        model = self._last() if self._last is not None else None
        return model.report().kernels() if model is not None else self._kernels_at_build

    def release(self) -> None:
        if not self.cache:  # nothing of this variant is held: nothing to free
            return
        self.cache.clear()
        release_memory()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # freeing is best effort
            pass


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc malloc_trim), so that a measurement of
    peak memory does not start inside pages an earlier measurement freed but the allocator kept."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
