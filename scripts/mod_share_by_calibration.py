"""Share of tokens each MoD layer processes on speech, routers fitted on speech through the codec vs on
random user codes (the bundled tiny LM and codec, C = 0.5, greedy).

    python scripts/mod_share_by_calibration.py FRAMES

The speech streamed is another stretch of the calibration speech than the routers were fitted on.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from reference_model import DuplexSpec
from reference_model.build import build_duplex
from reference_model.enhancements.mod import install
from reference_model.quant.calibrate import calibration_speech


def main() -> None:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    torch.set_num_threads(1)
    for on_speech in (True, False):
        model = build_duplex(DuplexSpec(lm="tiny", codec="tiny", temp=0.0, temp_text=0.0))
        stats = install(model.lm, 0.5, codec=model.codec if on_speech else None)
        audio, _ = calibration_speech(model.sample_rate, 16.0, seed=7)
        fs = model.frame_size
        audio = np.roll(audio, -int(8.0 * model.sample_rate))[: frames * fs]
        for i in range(frames):
            model.step(torch.from_numpy(audio[i * fs : (i + 1) * fs].copy()).view(1, 1, fs))
        shares = " ".join(f"{x:.3f}" for x in stats.processed_share)
        r2 = " ".join(f"{x:.2f}" for x in stats.fit_r2)
        print(f"fitted on {stats.calibration}: share per layer {shares}; router R^2 {r2}")


if __name__ == "__main__":
    main()
