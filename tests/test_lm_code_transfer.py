"""scripts/lm_code_transfer.py's least-squares refit: where the new codes are a relabelling of the old ones
the old embedding sums come back exactly; where they carry nothing of the old ones, R^2 stays near zero."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parents[1] / "scripts" / "lm_code_transfer.py"


def _module():
    spec = importlib.util.spec_from_file_location("lm_code_transfer", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def test_a_relabelled_codebook_is_recovered_and_noise_is_not_fitted():
    t = _module()
    rng = np.random.default_rng(0)
    card, dim, frames = 32, 8, 4000
    tables = [rng.standard_normal((card, dim)) for _ in range(3)]
    old = rng.integers(0, card, (3, frames))
    perms = [rng.permutation(card) for _ in range(3)]
    new = np.stack([p[o] for p, o in zip(perms, old)])
    fitted = t.fit_group(old, new, tables, card, lam=1e-6)
    assert t.r_squared(old, new, tables, fitted) > 0.999
    for p, table, f in zip(perms, tables, fitted):  # each new code's row is its old code's, up to a shift
        shift = (f[p] - table).mean(0)
        np.testing.assert_allclose(f[p] - shift, table, atol=1e-3)
    unrelated = rng.integers(0, card, (3, frames))
    fit_noise = t.fit_group(old[:, :2000], unrelated[:, :2000], tables, card, lam=1.0)
    held = t.r_squared(old[:, 2000:], unrelated[:, 2000:], tables, fit_noise)
    assert held < 0.05  # on frames left out of the fit, codes that say nothing predict nothing


def test_a_relabelled_codebook_gets_its_old_head_rows_and_unseen_codes_stay_unlikely():
    t = _module()
    rng = np.random.default_rng(1)
    card, dim, frames = 32, 8, 2000
    head = rng.standard_normal((card, dim))
    head[card // 2 :] -= 10  # codes the old codec never used: their logits are low
    old = rng.integers(0, card // 2, frames)
    perm = rng.permutation(card)
    new = perm[old]
    rare_row = head[card // 2 :].mean(0)
    got = t.conditional_mean(old, new, head, card, rare_row)
    np.testing.assert_allclose(got[perm[: card // 2]], head[: card // 2])  # each new code: its old code's row
    np.testing.assert_allclose(got[perm[card // 2 :]], np.tile(rare_row, (card // 2, 1)))  # never seen
    h = rng.standard_normal(dim)
    assert (got @ h).argmax() == perm[(head @ h).argmax()]  # the head writes the relabelled code
