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


def test_a_partial_reset_leaves_the_other_conversation_as_an_unreset_twin() -> None:
    """Row 1 after resetting row 0 equals the same conversation where nothing was reset: a reset that
    ignored its mask (or cleared every row's cache) changes row 1."""
    torch.set_num_threads(1)
    spec = DuplexSpec(lm="tiny", codec="tiny", batch_size=2, temp=0.0, temp_text=0.0)
    reset, twin = build_duplex(spec), build_duplex(spec)
    gen = torch.Generator().manual_seed(0)
    frames = [0.01 * torch.randn(2, 1, reset.frame_size, generator=gen) for _ in range(reset.max_delay + 8)]
    half = len(frames) // 2
    for f in frames[:half]:
        reset.step(f)
        twin.step(f)
    reset.reset(torch.tensor([True, False]))
    row0_moved = False
    for f in frames[half:]:
        text_a, pcm_a = reset.step(f)
        text_b, pcm_b = twin.step(f)
        assert torch.equal(pcm_a[1], pcm_b[1])
        if text_a is not None and text_b is not None:
            assert torch.equal(text_a[1], text_b[1])
        row0_moved |= not torch.equal(pcm_a[0], pcm_b[0])
    assert row0_moved  # the reset did reach row 0
