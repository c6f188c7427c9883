"""Memory measurement: storage counting, KV bytes measured == analytic on the tiny preset, peak RSS."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.test_latency import FakeClock, FakeDuplex, by, make_ctx
from vemi_eval.measurements.memory import (
    analytic_kv_bytes_per_stream,
    measure_memory,
    measured_kv_bytes_per_stream,
    storage_bytes,
)


class Packed(nn.Module):
    """Like a weight-only int4 layer: no float weight, a packed uint8 buffer and float scales."""

    def __init__(self, out_f: int, in_f: int) -> None:
        super().__init__()
        self.register_buffer("packed", torch.zeros(out_f, in_f // 2, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_f, in_f // 128))


def test_storage_bytes_counts_storage_once_and_packed_weights_as_stored():
    lin = nn.Linear(64, 32, bias=False)
    assert storage_bytes(lin) == 64 * 32 * 4
    tied = nn.Sequential(lin, nn.Linear(32, 64, bias=False))
    tied[1].weight = lin.weight  # tied weights share one storage (shapes differ only by a view)
    tied[1].weight = nn.Parameter(lin.weight.data.t())
    assert storage_bytes(tied) == 64 * 32 * 4
    assert storage_bytes(Packed(256, 1024)) == 256 * 512 + 256 * 8 * 4
    half = nn.Linear(64, 32).to(torch.bfloat16)
    assert storage_bytes(half) == (64 * 32 + 32) * 2


def test_storage_bytes_counts_ao_quantized_packed_params():
    model = torch.ao.quantization.quantize_dynamic(
        nn.Sequential(nn.Linear(256, 128)), {nn.Linear}, torch.qint8
    )
    got = storage_bytes(model)
    assert 256 * 128 <= got < 256 * 128 * 2  # int8 weight (+ bias and scales), far below fp32's 4 bytes


def test_meta_weights_are_an_error():
    with torch.device("meta"):
        lin = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="meta device"):
        storage_bytes(lin)


@pytest.fixture(scope="module")
def tiny_lm():
    from reference_model import load_lm

    torch.manual_seed(0)
    # random weights: allocated by the build itself (a bundled checkpoint is read lazily from its file, so
    # the freshness guard below would see its pages arrive during the measurement)
    return load_lm("tiny", "random")


@pytest.mark.parametrize("context", [1, 125, 3000, 10_000])
def test_kv_bytes_measured_equal_analytic_on_tiny(tiny_lm, context):
    measured = measured_kv_bytes_per_stream(tiny_lm, context)
    assert measured == analytic_kv_bytes_per_stream(tiny_lm.config, context, torch.float32)
    c = tiny_lm.config
    slots = min(context, c.context)
    kv = 2 * c.num_layers * c.dim * slots * 4 + 2 * c.depformer_num_layers * c.depformer_dim * c.dep_q * 4
    assert measured == kv + 8 * (c.num_layers * slots + c.depformer_num_layers * c.dep_q)


def test_kv_bytes_match_the_live_streamer(tiny_lm):
    from reference_model import Streamer

    streamer = Streamer(tiny_lm, batch_size=3)
    assert streamer.kv_cache_bytes == 3 * measured_kv_bytes_per_stream(tiny_lm, tiny_lm.context)


def test_peak_rss_sees_a_transient_allocation():
    # In a fresh process: a long-lived one (pytest after many tests) keeps freed heap pages resident, so
    # a new allocation may not raise RSS at all. The memory suite measures fresh builds for that reason.
    code = (
        "import time, numpy as np\n"
        "from vemi_eval.measurements.memory import PeakRSS\n"
        "with PeakRSS() as peak:\n"
        "    block = np.ones(64 * 2**20 // 8)\n"
        "    time.sleep(0.05)\n"
        "    del block\n"
        "print(peak.peak - peak.before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) >= 60 * 2**20


def test_memory_measurement_records_and_freshness_guard(tiny_lm):
    """The tiny LM inside a fake duplex; the LM is already resident, so the peak-memory rise must be
    flagged (a model handed back from a cache would otherwise pass for a small one)."""
    from reference_model import Streamer

    def build(batch_size: int = 1, fresh: bool = False):
        model = FakeDuplex(FakeClock(), lambda s, i, b: 1.0, batch_size=batch_size)
        model.lm, model.streamer = tiny_lm, Streamer(tiny_lm, batch_size=batch_size)
        return model

    ctx = make_ctx("memory", {"contexts": [250, 3000], "frames": 3, "batch_size": 2}, build)
    recs = measure_memory(ctx)
    lm_bytes = by(recs, "weight_bytes", component="lm").value
    assert lm_bytes == sum(t.numel() * t.element_size() for t in [*tiny_lm.parameters(), *tiny_lm.buffers()])
    assert by(recs, "weight_bytes", component="codec").value == (2 * 2 + 2) * 4
    assert by(recs, "weight_bytes", component="total").value == lm_bytes + 24
    for c in (250, 3000):
        measured = by(recs, "kv_cache_bytes_per_stream", context=c).value
        assert measured == by(recs, "kv_cache_bytes_per_stream_analytic", context=c).value
    allocated = by(recs, "kv_cache_bytes_allocated_per_stream").value
    assert allocated == by(recs, "kv_cache_bytes_per_stream", context=3000).value
    # The guard, on a run whose own allocations (caches at a short context) are small beside the LM: with
    # contexts up to 3000 at batch 2 the caches alone can exceed half of the (text_card 32) tiny LM.
    small = measure_memory(make_ctx("memory", {"contexts": [250], "frames": 3, "batch_size": 1}, build))
    rise = by(small, "peak_rss_increase_bytes")
    assert rise.status == "invalid" and "not built fresh" in rise.reason
    assert all(r.unit == "bytes" and r.higher_is_better is False for r in recs)
