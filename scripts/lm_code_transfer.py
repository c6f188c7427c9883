"""Carry an LM's listening over to another codec's codes: refit its audio input embeddings by least squares
so that, on the same training audio, the new codes sum to what the old codes summed to.

The temporal transformer reads, per stream and frame, the sum of one embedding per codebook (Moshi's input);
a codebook's delay decides at which step its code arrives, so the sum is taken per (stream, delay group).
Both codecs tokenise the same training sessions of the dialogue corpus; for each group G the new tables E'_k
solve

    min  sum_f || sum_{k in G} E'_k[new_k(f)] - sum_{k in G} E_k[old_k(f)] ||^2 + lam * sum_k ||E'_k||^2

by block coordinate descent (each table in turn is the ridge mean of the residual over the frames holding
each code: exact for one-hot designs). A code never seen in the fitting sessions gets a zero row.

The LM also *writes* codes: its depth transformer's output heads (``linears.q``, one row of logits per code)
and its embeddings of the codes it has just written (``depformer_emb.q``) name the old codec's codes. Each
new code's row becomes the mean of the old rows it co-occurs with on the same frames of the model's stream
(a new code never seen gets, for a head, the mean row of the old codes never seen, so it stays unlikely;
for an embedding, zeros). Without this (``--inputs-only``, the script before session 20) the refit LM
listens to the new codes and answers in the old ones: held-out audio cross-entropy 34 nats. The text path
and every transformer weight are the LM's own. The fit's R^2 per group, in sample and on sessions left out
of the fit, and the audio loss on the left-out sessions before and after the output side's refit, go into
the sidecar. Each ``--ridge``
value is tried; the one whose refit LM answers best, teacher-forced, on the training sessions left out of
the fit is kept (the held-out split is never looked at). A larger ridge raises the embeddings' R^2 on
left-out frames but shrinks them below the scale the transformer was trained on.

    python scripts/lm_code_transfer.py --lm reference_model/weights/tiny_lm.safetensors \
        --old-codec reference_model/weights/tiny_codec.safetensors \
        --new-codec reference_model/weights/tiny_codec_istft_full.safetensors \
        --sessions 400 --out runs/lm_transfer/tiny_lm.safetensors

Only the training split's sessions are read (``train_aug``, its first ``--sessions``); the held-out split is
for scoring the result (``python scripts/heldout_by_group.py OUT --codec NEW --by engine``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from reference_model.lm.load import load_lm
from reference_model.pairing import tokenizer_sha256
from vemi_eval.data import dialogue
from vemi_eval.environment import git_state
from vemi_eval.storage import file_sha256
from vemi_eval.training.lm import LossWeights, evaluate
from vemi_eval.training.lm_objective import load_token_folder
from vemi_eval.training.state import write_weights

SWEEPS = 12
VALIDATION_EVERY = 10  # every 10th session is left out of the fit and scores it


def _one_hot(codes: np.ndarray, card: int) -> sp.csr_matrix:
    """[card, F] with a one in (code, frame)."""
    f = codes.size
    return sp.csr_matrix((np.ones(f, np.float64), (codes, np.arange(f))), shape=(card, f))


def fit_group(
    old: np.ndarray, new: np.ndarray, tables: list[np.ndarray], card: int, lam: float
) -> list[np.ndarray]:
    """New tables for one delay group: ``old``/``new`` [K, F] codes, ``tables`` the K old [card, D] tables."""
    target = sum(t[o] for t, o in zip(tables, old))
    hots = [_one_hot(c, card) for c in new]
    counts = [np.asarray(h.sum(axis=1)).ravel() for h in hots]
    fitted = [np.zeros_like(t) for t in tables]
    pred = np.zeros_like(target)
    for _ in range(SWEEPS):
        for k, (hot, n) in enumerate(zip(hots, counts)):
            pred -= fitted[k][new[k]]
            fitted[k] = (hot @ (target - pred)) / (n + lam)[:, None]
            pred += fitted[k][new[k]]
    return fitted


def r_squared(old: np.ndarray, new: np.ndarray, tables: list[np.ndarray], fitted: list[np.ndarray]) -> float:
    target = sum(t[o] for t, o in zip(tables, old))
    pred = sum(t[c] for t, c in zip(fitted, new))
    return float(1 - ((target - pred) ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


def paired_frames(old_data, new_data, rows: list[int], keep) -> tuple[np.ndarray, np.ndarray]:
    """[K, F] codes of ``rows`` over every frame both codecs code (no -1) in the sessions ``keep`` takes."""
    new_by_name = dict(zip(new_data.names, new_data.grids))
    olds, news = [], []
    for i, (name, g_old) in enumerate(zip(old_data.names, old_data.grids)):
        if not keep(i):
            continue
        g_new = new_by_name[name]
        if g_new.shape != g_old.shape:
            raise SystemExit(f"session {name}: grids of {list(g_old.shape)} and {list(g_new.shape)}")
        o, n = g_old[rows].numpy(), g_new[rows].numpy()
        ok = (o >= 0).all(0) & (n >= 0).all(0)
        olds.append(o[:, ok])
        news.append(n[:, ok])
    return np.concatenate(olds, 1), np.concatenate(news, 1)


@dataclass(frozen=True)
class Group:
    """One (stream, delay group) of the LM's audio input embeddings and its paired codes."""

    stream: str
    delay: int
    levels: list[int]  # indices of ``emb.<k>``
    tables: list[np.ndarray]  # the start LM's tables [card, D], one per level
    fit: tuple[np.ndarray, np.ndarray]  # (old, new) codes [K, F] of the sessions fitted on
    validation: tuple[np.ndarray, np.ndarray]  # the same of the sessions left out


def groups_of(state: dict, cfg, data: dict) -> list[Group]:
    """Every (stream, delay group) with its paired frames: read once, whatever the ridges tried."""
    streams = {"model": 0, "user": cfg.dep_q}  # the model's codebooks first, then the user's
    per_stream = cfg.n_q // 2
    out = []
    for stream, first in streams.items():
        levels = list(range(first, first + per_stream))
        for delay in sorted({cfg.delays[1 + k] for k in levels}):
            group = [k for k in levels if cfg.delays[1 + k] == delay]
            rows = [1 + k for k in group]
            tables = [state[f"emb.{k}.weight"][: cfg.card].double().numpy() for k in group]
            fit = paired_frames(data["old"], data["new"], rows, lambda i: i % VALIDATION_EVERY)
            val = paired_frames(data["old"], data["new"], rows, lambda i: not i % VALIDATION_EVERY)
            out.append(Group(stream, delay, group, tables, fit, val))
    return out


def refit(state: dict, card: int, groups: list[Group], ridge: float) -> tuple[dict, list[dict]]:
    """``state`` with every audio input embedding refit at ``ridge``, and the fit's figures per group."""
    state = {k: v.clone() for k, v in state.items()}
    fits = []
    for g in groups:
        (o_fit, n_fit), (o_val, n_val) = g.fit, g.validation
        fitted = fit_group(o_fit, n_fit, g.tables, card, ridge)
        for k, f in zip(g.levels, fitted):
            state[f"emb.{k}.weight"][:card] = torch.from_numpy(f).float()
        fits.append(
            {
                "stream": g.stream,
                "delay": g.delay,
                "embeddings": [f"emb.{k}" for k in g.levels],
                "frames_fit": int(o_fit.shape[1]),
                "frames_validation": int(o_val.shape[1]),
                "r2_fit": round(r_squared(o_fit, n_fit, g.tables, fitted), 4),
                "r2_validation": round(r_squared(o_val, n_val, g.tables, fitted), 4),
                "codes_unseen": int(sum((np.bincount(c, minlength=card) == 0).sum() for c in n_fit)),
            }
        )
    return state, fits


def conditional_mean(
    old: np.ndarray, new: np.ndarray, table: np.ndarray, card: int, unseen: np.ndarray
) -> np.ndarray:
    """[card, D]: row n is the mean of ``table``'s rows of the old codes on the frames where the new code is n
    (``old``/``new`` [F] paired codes); a new code never seen gets ``unseen``."""
    hot = _one_hot(new, card)
    n = np.asarray(hot.sum(axis=1)).ravel()
    out = (hot @ table[old]) / np.maximum(n, 1)[:, None]
    out[n == 0] = unseen
    return out


def refit_output_side(state: dict, cfg, data: dict) -> tuple[dict, list[dict]]:
    """``state`` with the depth transformer's output heads and code embeddings moved to the new codes (the
    model's stream, fitting sessions only), and per codebook how many new codes the fit saw."""
    state = {k: v.clone() for k, v in state.items()}
    rows = [1 + q for q in range(cfg.dep_q)]
    old, new = paired_frames(data["old"], data["new"], rows, lambda i: i % VALIDATION_EVERY)
    figures = []
    for q in range(cfg.dep_q):
        head = state[f"linears.{q}.weight"]
        table = head.double().numpy()
        rare = np.bincount(old[q], minlength=cfg.card) == 0
        unseen = table[rare].mean(0) if rare.any() else table.mean(0)
        head.copy_(torch.from_numpy(conditional_mean(old[q], new[q], table, cfg.card, unseen)))
        names = [f"linears.{q}"]
        if q + 1 < cfg.dep_q:  # the code of level q is what the depth transformer reads at step q + 1
            emb = state[f"depformer_emb.{q}.weight"]
            table = emb[: cfg.card].double().numpy()
            emb[: cfg.card] = torch.from_numpy(
                conditional_mean(old[q], new[q], table, cfg.card, np.zeros(table.shape[1]))
            )
            names.append(f"depformer_emb.{q}")
        seen = int((np.bincount(new[q], minlength=cfg.card) > 0).sum())
        figures.append(
            {"codebook": q, "tensors": names, "frames_fit": int(old.shape[1]), "new_codes_seen": seen}
        )
    return state, figures


def validation_scores(lm, state: dict, data) -> dict[str, float]:
    """Teacher-forced answer accuracy and audio loss on the training sessions left out of the fit (new
    codes): what picks the ridge, so that the held-out split is never looked at."""
    lm.load_state_dict(state)
    grids = [g for i, g in enumerate(data.grids) if not i % VALIDATION_EVERY]
    got = evaluate(lm, grids, 256, LossWeights(), None)
    return {
        "text_word_accuracy": float(got["text_word_accuracy_teacher_forced"]),
        "audio_loss": float(got["audio_loss"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", required=True, help="the LM to carry over (on --old-codec codes)")
    ap.add_argument("--old-codec", required=True)
    ap.add_argument("--new-codec", required=True)
    ap.add_argument("--sessions", type=int, default=400, help="training sessions to fit on")
    ap.add_argument("--split", default="train_aug")
    ap.add_argument(
        "--ridge",
        type=float,
        nargs="+",
        default=[0.1, 1.0, 10.0],
        help="lam values to try; the one with the best validation accuracy is kept",
    )
    ap.add_argument("--workers", type=int, default=1, help="processes that tokenise the sessions")
    ap.add_argument(
        "--inputs-only",
        action="store_true",
        help="refit the audio input embeddings only (the output heads keep writing the old codes)",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.split == "heldout":
        raise SystemExit("the fit reads training sessions only: the held-out split scores the result")
    for what in ("lm", "old_codec", "new_codec"):
        if not Path(getattr(args, what)).is_file():
            raise SystemExit(f"error: --{what.replace('_', '-')} {getattr(args, what)}: no such file")
    if args.sessions < VALIDATION_EVERY or any(r < 0 for r in args.ridge):
        raise SystemExit(f"error: --sessions must be >= {VALIDATION_EVERY} and every --ridge >= 0")
    torch.set_num_threads(1)
    t0 = time.time()
    lm = load_lm("tiny", args.lm)
    cfg = lm.config
    folders = {
        which: dialogue.tokenised_split(args.split, path, limit=args.sessions, workers=args.workers)
        for which, path in (("old", args.old_codec), ("new", args.new_codec))
    }
    data = {w: load_token_folder(f, cfg.n_q + 1) for w, f in folders.items()}
    start = {k: v.clone() for k, v in lm.state_dict().items()}
    groups = groups_of(start, cfg, data)
    tried = []
    for ridge in args.ridge:
        state, fits = refit(start, cfg.card, groups, ridge)
        scores = validation_scores(lm, state, data["new"])
        acc = scores["text_word_accuracy"]
        tried.append(
            {"ridge": ridge, "validation_text_word_accuracy": round(acc, 4), "groups": fits, "state": state,
             "scores": scores}  # state and scores stay out of the sidecar
        )  # fmt: skip
        print(json.dumps({"ridge": ridge, "validation_accuracy": round(acc, 4),
                          "r2_validation": [g["r2_validation"] for g in fits]}), flush=True)  # fmt: skip
    best = max(tried, key=lambda t: t["validation_text_word_accuracy"])
    output_side = None
    if not args.inputs_only:
        before = best["scores"]  # the ridge sweep scored these weights already
        best["state"], heads = refit_output_side(best["state"], cfg, data)
        after = validation_scores(lm, best["state"], data["new"])
        output_side = {"codebooks": heads, "validation_before": before, "validation_after": after}
        print(json.dumps({"output side": {"before": before, "after": after}}), flush=True)
    out = Path(args.out)
    write_weights(out, best["state"], {"preset": "tiny", "code_transfer": "scripts/lm_code_transfer.py"})
    for t in tried:
        del t["state"], t["scores"]
    lm_sidecar = Path(args.lm).with_suffix(".json")
    base = json.loads(lm_sidecar.read_text()) if lm_sidecar.is_file() else {}
    sidecar = {
        "produced_by": "scripts/lm_code_transfer.py",
        "command": "python scripts/lm_code_transfer.py " + " ".join(sys.argv[1:]),
        "what": (
            "the LM's audio input embeddings refit by least squares to another codec's codes"
            + (
                ""
                if args.inputs_only
                else ", its depth transformer's output heads and code embeddings by the mean "
                "of the old rows each new code co-occurs with"
            )
            + "; every other tensor is the LM's own. Not trained: no step ran."
        ),
        "weights": out.name,
        "weights_sha256": file_sha256(out),
        "from_lm": {"path": str(args.lm), "sha256": file_sha256(Path(args.lm))},
        "old_codec": {"path": str(args.old_codec), "sha256": file_sha256(Path(args.old_codec))},
        "codec_sha256": file_sha256(Path(args.new_codec)),
        "codec_tokenizer_sha256": tokenizer_sha256(Path(args.new_codec)),
        "fit": {
            "split": args.split,
            "sessions": args.sessions,
            "validation": f"every {VALIDATION_EVERY}th session left out of the fit; picks the ridge",
            "data_sha256": {w: d.sha256 for w, d in data.items()},
            "sweeps": SWEEPS,
            "ridge": best["ridge"],
            "tried": tried,
            "output_side": output_side,
        },
        "lm_sidecar_of_the_start": {k: base[k] for k in ("recipe_digest", "steps") if k in base},
        "seconds": round(time.time() - t0, 1),
        "environment": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            **git_state(),
        },
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"wrote {out} (ridge {best['ridge']}; {sidecar['seconds']} s)")


if __name__ == "__main__":
    main()
