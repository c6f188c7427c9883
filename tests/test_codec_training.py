"""Training mechanics of the codec: EMA codebooks, k-means init, dead-code re-init, straight-through grads."""

from __future__ import annotations

import torch

from reference_model.codec import MimiCodec, codec_config
from reference_model.codec.quantizer import EuclideanCodebook, ResidualVectorQuantizer
from vemi_eval.training.codec import MultiScaleMelLoss, _lr_at


def test_kmeans_and_ema_track_the_data():
    torch.manual_seed(0)
    centers = torch.randn(4, 8) * 5
    data = centers[torch.randint(0, 4, (512,))] + 0.01 * torch.randn(512, 8)
    cb = EuclideanCodebook(8, 4, decay=0.5)
    cb.kmeans_init(data)
    for _ in range(10):
        cb.ema_update(data, cb.encode(data), replace_dead=False)
    # every centre has a centroid next to it
    dist = torch.cdist(centers, cb.embedding).min(dim=1).values
    assert dist.max() < 0.1
    assert torch.equal(cb.encode(cb.embedding), torch.arange(4))


def test_dead_codes_are_moved_onto_the_data():
    torch.manual_seed(0)
    cb = EuclideanCodebook(4, 16, decay=0.1)
    cb.embedding_sum.fill_(-100.0)  # all centroids far away, code 0 the least so
    cb.embedding_sum[0] = 1.0
    cb._clear_cache()
    data = torch.randn(256, 4) + 1.0
    assert set(cb.encode(data).tolist()) == {0}
    replaced = cb.ema_update(data, cb.encode(data), replace_dead=True)
    assert replaced > 0.5
    assert len(set(cb.encode(data).tolist())) > 4


def test_rvq_training_pass_gives_straight_through_gradient_and_commitment():
    torch.manual_seed(0)
    # fewer bins than vectors, so k-means cannot give every vector its own centroid
    rvq = ResidualVectorQuantizer(dimension=8, input_dimension=16, output_dimension=16, n_q=4, bins=8)
    for vq in rvq.vq.layers:
        vq._codebook._initialized.fill_(0.0)
    rvq.train()
    x = torch.randn(2, 16, 40, requires_grad=True)
    out, codes, commit = rvq(x, n_q=3)
    assert codes.shape == (2, 3, 40) and commit > 0
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(bool(vq._codebook._initialized.item()) for vq in rvq.vq.layers[:3])
    assert not bool(rvq.vq.layers[3]._codebook._initialized.item())  # never reached with n_q=3


def test_codec_training_step_lowers_the_loss():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    codec = MimiCodec(codec_config("tiny"))
    codec.train()
    mel = MultiScaleMelLoss(24000)
    opt = torch.optim.AdamW(codec.parameters(), lr=1e-3)
    t = torch.arange(1920 * 2) / 24000
    x = (0.1 * torch.sin(2 * torch.pi * 220 * t)).view(1, 1, -1).repeat(2, 1, 1)
    losses = []
    for _ in range(6):
        y, _, commit = codec(x, 8, torch.tensor([False, True]))
        loss = mel(y, x) + 10 * (y - x).abs().mean() + commit
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_lr_schedule_warms_up_then_anneals():
    assert _lr_at(1e-3, 0, 0.0, 10) < _lr_at(1e-3, 9, 0.0, 10) == 1e-3
    assert _lr_at(1e-3, 100, 0.5, 10) < 1e-3
    assert abs(_lr_at(1e-3, 100, 1.0, 10) - 5e-5) < 1e-12
