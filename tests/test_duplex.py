"""The full-duplex interface: one frame in, text + model PCM out, per-conversation reset."""

import torch

from reference_model import DuplexSpec, build_duplex


def test_step_after_partial_reset_gives_silence_for_the_reset_conversation() -> None:
    torch.set_num_threads(1)
    duplex = build_duplex(DuplexSpec(lm="tiny", codec="tiny", batch_size=2, temp=0.0, temp_text=0.0))
    frame = 0.01 * torch.randn(2, 1, duplex.frame_size, generator=torch.Generator().manual_seed(0))
    for _ in range(duplex.max_delay + 2):
        text, pcm = duplex.step(frame)
    assert text is not None and pcm.shape == (2, 1, duplex.frame_size)
    duplex.reset(torch.tensor([True, False]))
    text, pcm = duplex.step(frame)  # row 0 is back inside its delays: tokens -2
    assert pcm.shape == (2, 1, duplex.frame_size)
    assert torch.all(pcm[0] == 0)
    assert torch.isfinite(pcm).all()
