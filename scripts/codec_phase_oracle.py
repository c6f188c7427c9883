"""Whether a codec loses its speech in the magnitudes or in the phase: each held-out utterance's 8-codebook
round trip recombined with the original in the STFT domain, on every held-out set of the codec trainer.

* ``decoded``: the round trip as it is (what the codec suite scores);
* ``decoded_mag_true_phase``: the decoded STFT magnitude with the original's phase;
* ``true_mag_decoded_phase``: the original's magnitude with the decoded phase.

If ``decoded_mag_true_phase`` scores far above ``decoded``, the decoder's phase is what costs
intelligibility (the lever: phase losses or an adversarial phase, issue 31's step 5); if it scores about
the same, the magnitudes are (the lever: the autoencoder's capacity and training). The STFT is the iSTFT
decoder's own (Hann, n_fft 960, hop 240 at 24 kHz), so the recombination is what that decoder could emit.
The best lag of the decoded signal against the original (cross-correlation of 2 ms energy envelopes,
+-20 ms) is reported too: a recombination is only meaningful when the two are aligned.

    python scripts/codec_phase_oracle.py reference_model/weights/tiny_codec_istft_full.safetensors \
        --preset tiny-istft --out reports/training/codec-phase-oracle-istft-full.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import correlate

from reference_model.codec import load_codec
from vemi_eval.environment import git_state
from vemi_eval.storage import file_sha256
from vemi_eval.training.codec_eval import heldout_sets, score_roundtrip

N_FFT, HOP = 960, 240
MAX_LAG_S = 0.02


def _stft(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x.astype(np.float32))
    return torch.stft(t, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)


def _istft(spec: torch.Tensor, length: int) -> np.ndarray:
    return torch.istft(spec, N_FFT, HOP, window=torch.hann_window(N_FFT), length=length).numpy()


def _envelope(x: np.ndarray, sr: int) -> np.ndarray:
    """Energy smoothed over 2 ms: unlike the waveform, it does not depend on the phase."""
    k = max(1, int(0.002 * sr))
    return np.convolve(x.astype(np.float64) ** 2, np.ones(k) / k, mode="same")


def best_lag(ref: np.ndarray, out: np.ndarray, max_lag: int, sr: int) -> int:
    """The shift (samples, > 0: ``out`` late) maximising the cross-correlation of the energy envelopes
    within +-``max_lag`` (the waveforms' own correlation is meaningless where the phases differ)."""
    ref, out = _envelope(ref, sr), _envelope(out, sr)
    ref, out = ref - ref.mean(), out - out.mean()
    full = correlate(out, ref, mode="full", method="fft")  # index len(ref) - 1 is lag 0
    zero = len(ref) - 1
    return int(np.argmax(full[zero - max_lag : zero + max_lag + 1])) - max_lag


def recombine(ref: np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
    r, o = _stft(ref), _stft(out)
    return {
        "decoded": out,
        "decoded_mag_true_phase": _istft(o.abs() * torch.exp(1j * r.angle()), len(ref)),
        "true_mag_decoded_phase": _istft(r.abs() * torch.exp(1j * o.angle()), len(ref)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--preset", default="tiny-istft")
    ap.add_argument("--codebooks", type=int, default=8)
    ap.add_argument("--per-set", type=int, help="utterances per held-out set (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    if not Path(args.weights).is_file():
        raise SystemExit(f"error: {args.weights}: no such file")
    torch.set_num_threads(args.threads)
    codec = load_codec(args.preset, args.weights, num_codebooks=args.codebooks).eval()
    sr, fs = codec.sample_rate, codec.frame_size
    if sr != 24000:
        raise SystemExit(f"the oracle's STFT is the 24 kHz iSTFT decoder's; this codec runs at {sr} Hz")
    t0 = time.time()
    result: dict = {
        "weights": str(args.weights),
        "sha256": file_sha256(Path(args.weights)),
        "codebooks": args.codebooks,
        "stft": {"window": "hann", "n_fft": N_FFT, "hop": HOP},
        "sets": {},
    }
    for h in heldout_sets(sr, per_set=args.per_set):
        rows: dict[str, list] = {}
        lags = []
        for _uid, _spk, ref in h.utterances:
            x = torch.nn.functional.pad(torch.from_numpy(ref), (0, (-len(ref)) % fs)).view(1, 1, -1)
            with torch.no_grad():
                out = codec.decode(codec.encode(x))[0, 0, : len(ref)].numpy()
            lags.append(best_lag(ref, out, int(MAX_LAG_S * sr), sr))
            for path, y in recombine(ref, out).items():
                rows.setdefault(path, []).append(score_roundtrip(ref, y, sr))
        summary = {
            path: dict(zip(("pesq_wb", "stoi", "level_db"), np.round(np.mean(v, 0), 4).tolist()))
            for path, v in rows.items()
        }
        result["sets"][h.engine] = {
            "utterances": len(h.utterances),
            "paths": summary,
            "lag_samples": {"median": float(np.median(lags)), "min": min(lags), "max": max(lags)},
        }
        print(h.engine, json.dumps({k: v["stoi"] for k, v in summary.items()}), flush=True)
    result["seconds"] = round(time.time() - t0, 1)
    result["environment"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        **git_state(),
        "threads": args.threads,
        "command": "python scripts/codec_phase_oracle.py "
        + " ".join(a for a in (args.weights, f"--preset {args.preset}", f"--codebooks {args.codebooks}")),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
