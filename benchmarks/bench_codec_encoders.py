"""Cost of one whole-codec training step and of one streamed frame's encoding: the SEANet encoder
(``tiny-istft``) against the causal STFT encoder front-end (``tiny-stft``), both with the iSTFT decoder,
side by side in one process.

A training step is the ``istft-full`` recipe's (training/codec_recipes.py): every part learns, batch 2 x
24 frames (1.92 s), forward + mel, linear-STFT, level, waveform and commitment losses + backward + AdamW.
Calls alternate (SEANet-encoder step, STFT-encoder step, ...) so load from other processes hits both alike;
medians over ``--steps`` after 2 warm-up steps. Then the streaming encode of one 80 ms frame.

    python benchmarks/bench_codec_encoders.py --steps 10 --threads 1 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch
from alternating import machine_facts, time_alternating
from torch.nn import functional as F

from reference_model.codec import CodecStreamer, MimiCodec, codec_config
from vemi_eval.training.codec_losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, frame_level_loss
from vemi_eval.training.codec_recipes import named_recipes

PRESETS = ("tiny-istft", "tiny-stft")


def _arm(preset: str):
    recipe = named_recipes()["istft-full"]
    codec = MimiCodec(codec_config(preset))
    codec.train()
    opt = torch.optim.AdamW(codec.parameters(), lr=1e-4)
    mel = MultiScaleMelLoss(codec.sample_rate, recipe.mel_scales, recipe.mel)
    stft = MultiResolutionSTFTLoss()
    keep = recipe.segment_frames * codec.frame_size - codec.decode_delay
    n_enc = sum(p.numel() for p in codec.encoder.parameters())

    def step(x: torch.Tensor) -> None:
        y, _, commit = codec(x, 8)
        y, xx = y[..., :keep], x[..., :keep]
        loss = mel(y, xx) + stft(y, xx) + frame_level_loss(y, xx) + 0.1 * F.l1_loss(y, xx) + commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return recipe, codec, step, n_enc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arms = {preset: _arm(preset) for preset in PRESETS}
    recipe = arms[PRESETS[0]][0]
    length = recipe.segment_frames * 1920
    rng = np.random.default_rng(0)

    def batch() -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal((recipe.batch_size, 1, length)).astype(np.float32) * 0.1)

    def frame() -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal((1, 1, 1920)).astype(np.float32) * 0.1)

    times = time_alternating({name: arm[2] for name, arm in arms.items()}, batch, args.steps, warmup=2)
    streams = {name: CodecStreamer(codec.eval(), 1) for name, (_, codec, _, _) in arms.items()}
    frame_s = time_alternating({n: s.encode for n, s in streams.items()}, frame, args.frames, warmup=3)
    frame_ms = {name: [t * 1e3 for t in ts] for name, ts in frame_s.items()}
    out = {
        **machine_facts(args.threads),
        "arms": {
            name: {
                "encoder_parameters": arms[name][3],
                "train_step_s_median": statistics.median(times[name]),
                "train_step_s_all": [round(t, 4) for t in times[name]],
                "stream_encode_frame_ms_median": statistics.median(frame_ms[name]),
            }
            for name in arms
        },
    }
    a, b = (out["arms"][n]["train_step_s_median"] for n in PRESETS)
    out["stft_over_seanet_encoder_step"] = b / a
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
