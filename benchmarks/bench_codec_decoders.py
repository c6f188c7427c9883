"""Cost of one decoder-A/B training step and of one streamed frame: the tiny codec's SEANet decoder against
the causal iSTFT decoder (``tiny-istft``), side by side in one process.

A training step is the A/B recipes' (``ab-seanet`` / ``ab-istft`` in vemi_eval/training/codec_recipes.py):
frozen encoder side, batch 2 x 24 frames (1.92 s), forward + mel, linear-STFT, level and waveform losses +
backward + AdamW. Calls alternate (SEANet step, iSTFT step, ...) so load from other processes hits both
alike; medians over ``--steps`` after 2 warm-up steps. Then the streaming decode of one 80 ms frame.

    python benchmarks/bench_codec_decoders.py --steps 10 --threads 1 [--json out.json]
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
from vemi_eval.training.codec_model import freeze_encoder_side
from vemi_eval.training.codec_recipes import named_recipes


def _arm(recipe_name: str):
    recipe = named_recipes()[recipe_name]
    codec = MimiCodec(codec_config(recipe.preset))
    codec.train()
    freeze_encoder_side(codec)
    params = [p for p in codec.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    mel = MultiScaleMelLoss(codec.sample_rate, recipe.mel_scales, recipe.mel)
    stft = MultiResolutionSTFTLoss()
    keep = recipe.segment_frames * codec.frame_size - codec.decode_delay
    n_dec = sum(p.numel() for p in codec.decoder.parameters())

    def step(x: torch.Tensor) -> None:
        y, _, _ = codec(x, 8)
        y, xx = y[..., :keep], x[..., :keep]
        loss = mel(y, xx) + stft(y, xx) + frame_level_loss(y, xx) + 0.1 * F.l1_loss(y, xx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return recipe, codec, step, n_dec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arms = {name: _arm(name) for name in ("ab-seanet", "ab-istft")}
    recipe = arms["ab-seanet"][0]
    length = recipe.segment_frames * 1920
    rng = np.random.default_rng(0)

    def batch() -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal((recipe.batch_size, 1, length)).astype(np.float32) * 0.1)

    times = time_alternating({name: arm[2] for name, arm in arms.items()}, batch, args.steps, warmup=2)
    streams = {name: CodecStreamer(codec.eval(), 1) for name, (_, codec, _, _) in arms.items()}
    codes = torch.randint(0, 2048, (1, 8, 1))
    frame_s = time_alternating(
        {n: s.decode for n, s in streams.items()}, lambda: codes, args.frames, warmup=3
    )
    frame_ms = {name: [t * 1e3 for t in ts] for name, ts in frame_s.items()}
    out = {
        **machine_facts(args.threads),
        "arms": {
            name: {
                "decoder_parameters": arms[name][3],
                "train_step_s_median": statistics.median(times[name]),
                "train_step_s_all": [round(t, 4) for t in times[name]],
                "stream_decode_frame_ms_median": statistics.median(frame_ms[name]),
            }
            for name in arms
        },
    }
    a, b = (out["arms"][n]["train_step_s_median"] for n in ("ab-seanet", "ab-istft"))
    out["istft_over_seanet_step"] = b / a
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
