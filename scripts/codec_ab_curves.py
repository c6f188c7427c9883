"""The decoder A/B's curves: held-out STOI (8 codebooks) against the training steps' CPU-minutes, per arm and
held-out set, from the trainers' sidecars (``progress``: the 4-utterance-per-set subsets evaluated every 15
minutes of wall time). Writes an SVG and prints a Markdown table of the points.

    python scripts/codec_ab_curves.py ab-seanet=reports/training/codec-ab-seanet.json \
        ab-istft=reports/training/codec-ab-istft.json --svg reports/training/codec-ab-curves.svg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SETS = ("espeak_eval_corpus", "espeak_heldout_voices", "festival_heldout_voices")


def points(sidecar: Path, n_codebooks: str = "8") -> list[tuple[float, int, dict[str, float]]]:
    info = json.loads(sidecar.read_text())
    rows = []
    for p in info.get("progress", []):
        stoi = {s: p["heldout_subset"][s][n_codebooks]["stoi"] for s in SETS if s in p["heldout_subset"]}
        rows.append((p.get("train_cpu_s", 0) / 60.0, p["step"], stoi))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arms", nargs="+", help="NAME=SIDECAR.json")
    ap.add_argument("--svg")
    args = ap.parse_args()
    arms = {a.split("=", 1)[0]: points(Path(a.split("=", 1)[1])) for a in args.arms}
    fig, axes = plt.subplots(1, len(SETS), figsize=(4.2 * len(SETS), 3.4), sharey=True)
    for ax, s in zip(axes, SETS):
        for name, rows in arms.items():
            xs = [r[0] for r in rows if s in r[2]]
            ys = [r[2][s] for r in rows if s in r[2]]
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_title(s.replace("_", " "), fontsize=9)
        ax.set_xlabel("training CPU-minutes (1 thread)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out STOI, 8 codebooks (4 utt./set)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    if args.svg:
        fig.savefig(args.svg, metadata={"Date": None})
    print("| arm | CPU-min | step | " + " | ".join(SETS) + " |")
    print("|---|---|---|" + "---|" * len(SETS))
    for name, rows in arms.items():
        for cpu_min, step, stoi in rows:
            cells = " | ".join(f"{stoi[s]:.3f}" if s in stoi else "" for s in SETS)
            print(f"| {name} | {cpu_min:.1f} | {step} | {cells} |")


if __name__ == "__main__":
    main()
