"""Where a codec loses its speech: the unquantized path against the quantized one, and how the codebooks are
used, on every held-out set of the codec trainer (``heldout_sets``: the espeak evaluation corpus, the codec
corpus's held-out espeak variants and held-out festival voices).

* ``bypass``: encoder -> transformer -> decoder with the quantizer bypassed (the latent as it is). If it
  scores about what 8 codebooks do, the autoencoder is the limit, not the quantizer.
* ``q<n>``: the offline round trip through ``n`` codebooks.
* usage per codebook over every held-out frame: entropy (bits), perplexity, share of the 2048 codes seen.

    python scripts/codec_diagnosis.py reference_model/weights/tiny_codec.safetensors \
        --out reports/training/codec-diagnosis-bundled.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from reference_model.codec import load_codec
from vemi_eval.environment import git_state
from vemi_eval.storage import file_sha256
from vemi_eval.training.codec_eval import heldout_sets, score_roundtrip

CODEBOOKS = (1, 2, 4, 8, 16, 32)


def _usage(codes: np.ndarray, bins: int) -> list[dict[str, float]]:
    """codes [K, frames] -> per codebook: entropy in bits, perplexity, share of the codes seen."""
    rows = []
    for k in range(codes.shape[0]):
        counts = np.bincount(codes[k], minlength=bins).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * np.log2(p)).sum())
        seen = round(float((counts > 0).mean()), 4)
        rows.append({"codebook": k + 1, "entropy_bits": round(entropy, 3),
                     "perplexity": round(2**entropy, 1), "codes_seen": seen})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--per-set", type=int, help="utterances per held-out set (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec(args.preset, args.weights, num_codebooks=None).eval()
    sr, fs = codec.sample_rate, codec.frame_size
    t0 = time.time()
    sets = heldout_sets(sr, per_set=args.per_set)
    result: dict = {"weights": str(args.weights), "sha256": file_sha256(Path(args.weights)), "sets": {}}
    for h in sets:
        rows: dict[str, list] = {"bypass": [], **{f"q{n}": [] for n in CODEBOOKS}}
        all_codes = []
        for _uid, _spk, ref in h.utterances:
            x = torch.from_numpy(ref)
            x = torch.nn.functional.pad(x, (0, (-len(ref)) % fs)).view(1, 1, -1)
            with torch.no_grad():
                latent = codec.encode_latent(x)
                every = torch.ones(1, dtype=torch.bool)
                bypassed, codes, _ = codec.quantizer(latent, codec.max_codebooks, every)
                y = codec.decode_latent(bypassed)[0, 0, : len(ref)].numpy()
                rows["bypass"].append(score_roundtrip(ref, y, sr))
                all_codes.append(codes[0].numpy())
                for n in CODEBOOKS:
                    codec.set_num_codebooks(n)
                    y = codec.decode(codec.encode(x))[0, 0, : len(ref)].numpy()
                    rows[f"q{n}"].append(score_roundtrip(ref, y, sr))
        codec.set_num_codebooks(codec.max_codebooks)
        summary = {
            path: dict(zip(("pesq_wb", "stoi", "level_db"), np.round(np.mean(v, 0), 4).tolist()))
            for path, v in rows.items()
        }
        result["sets"][h.engine] = {
            "utterances": len(h.utterances),
            "speakers": sorted({s for _, s, _ in h.utterances}),
            "paths": summary,
            "codebook_usage": _usage(np.concatenate(all_codes, axis=-1), codec.cardinality),
        }
        print(h.engine, json.dumps({k: v["stoi"] for k, v in summary.items()}), flush=True)
    result["seconds"] = round(time.time() - t0, 1)
    result["environment"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        **git_state(),
        "threads": args.threads,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
