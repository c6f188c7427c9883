"""The GPU path, as far as a CPU can check it (issue 11): flash through a stand-in with flash-attn's
semantics, the dtype rules, conflicts and refusals, out-of-memory through capture, the codec in its own
dtype, fidelity's static buffers, the quantized-weights cache. The CUDA runs themselves are
scripts/gpu_check.py's."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import torch

from reference_model import DuplexSpec, FlagError, Streamer, build_duplex, load_lm, parse_flags
from reference_model.lm.transformer import flash_kvcache_args
from reference_model.probes import attend, step_kernel


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _flash_standin() -> types.ModuleType:
    """flash_attn_func / flash_attn_with_kvcache with flash-attn's argument layout and semantics."""

    def flash_attn_func(q, k, v, causal=False):  # [B, T, H, D]
        T, L = q.shape[1], k.shape[1]
        mask = torch.ones(T, L, dtype=torch.bool).tril(L - T) if causal else None
        return attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, "eager").transpose(1, 2)

    def flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens):  # q [B, 1, H, D], caches [B, L, Hkv, D]
        assert cache_seqlens.dtype == torch.int32 and k_cache.stride(-1) == 1 and q.shape[1] == 1
        out = []
        for b in range(q.shape[0]):
            n = int(cache_seqlens[b])
            qb, kb, vb = q[b : b + 1], k_cache[b : b + 1, :n], v_cache[b : b + 1, :n]
            out.append(attend(qb.transpose(1, 2), kb.transpose(1, 2), vb.transpose(1, 2), None, "eager"))
        return torch.cat(out).transpose(1, 2)

    module = types.ModuleType("flash_attn")
    module.flash_attn_func = flash_attn_func
    module.flash_attn_with_kvcache = flash_attn_with_kvcache
    return module


def test_kvcache_arguments_are_views_with_per_item_lengths() -> None:
    q, k, v = torch.randn(2, 4, 1, 8), torch.randn(2, 2, 10, 8), torch.randn(2, 2, 10, 8)
    args = flash_kvcache_args(q, k, v, torch.tensor([10, 3]))
    assert args["q"].shape == (2, 1, 4, 8) and args["k_cache"].shape == (2, 10, 2, 8)
    assert args["k_cache"].stride(-1) == 1 and args["k_cache"].data_ptr() == k.data_ptr()  # no copy
    assert args["cache_seqlens"].dtype == torch.int32 and args["cache_seqlens"].tolist() == [10, 3]
    with pytest.raises(ValueError, match="one query"):
        flash_kvcache_args(torch.randn(2, 4, 3, 8), k, v, torch.tensor([10, 3]))


def test_which_kernel_a_flash_step_runs() -> None:
    assert step_kernel("flash", 1, masked=False, contiguous=True) == "flash_attn_func"
    assert step_kernel("flash", 1, masked=True, contiguous=True) == "flash_attn_with_kvcache"
    assert step_kernel("flash", 1, masked=True, contiguous=False) == "sdpa"  # mod's holes need the mask
    assert step_kernel("flash", 4, masked=True, contiguous=True) == "sdpa"
    assert step_kernel("sdpa", 1, masked=True, contiguous=True) == "sdpa"


def test_flash_streams_the_temporal_transformer_like_sdpa_with_partial_resets(monkeypatch) -> None:
    """attn=flash reaches the temporal transformer in the ragged step (a partial reset) and in the
    static-shape step of cuda-graphs/compile: through a stand-in, logits equal sdpa's."""
    monkeypatch.setitem(sys.modules, "flash_attn", _flash_standin())

    def run(backend: str, static: bool):
        torch.manual_seed(0)
        lm = load_lm("tiny", "random")
        for attn in lm.transformer.attentions() + lm.depformer.attentions():
            attn.backend = backend  # the flag would refuse flash on CPU: set it directly
        streamer = Streamer(lm, temp=0, temp_text=0, batch_size=2)
        if static:  # what the graphed / compiled temporal step does: every slot, per-item positions
            from reference_model.probes import StepPositions

            inner = streamer.temporal_step

            def static_step(tokens, step, caches, condition=None):
                full = StepPositions(step.positions, common=None, span=lm.context, cos=step.cos, sin=step.sin)
                return inner(tokens, full, caches, condition)

            streamer.temporal_step = static_step
        g = torch.Generator().manual_seed(1)
        logits = []
        for t in range(14):
            if t == 6:
                streamer.reset(torch.tensor([False, True]))
            streamer.step(torch.randint(0, lm.card, (2, 8, 1), generator=g))
            logits.append(streamer.last_text_logits)
        kernels = {}
        for attn in lm.transformer.attentions():
            for k, n in attn.kernel_calls.items():
                kernels[k] = kernels.get(k, 0) + n
        return torch.stack(logits), kernels

    ref, _ = run("sdpa", static=False)
    got, kernels = run("flash", static=False)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert kernels.get("flash_attn_func", 0) > 0 and kernels.get("flash_attn_with_kvcache", 0) > 0
    assert "sdpa" not in kernels
    got_static, kernels_static = run("flash", static=True)
    torch.testing.assert_close(got_static, ref, atol=1e-5, rtol=0)
    assert set(kernels_static) == {"flash_attn_with_kvcache"}


def test_flags_that_need_a_dtype_say_so() -> None:
    from reference_model.enhancements import attention, quantize

    with pytest.raises(FlagError, match="--dtype bfloat16"):
        quantize.check_dtype(4, torch.device("cuda"), torch.float32)
    quantize.check_dtype(8, torch.device("cuda"), torch.float32)  # int8's kernel takes fp32
    quantize.check_dtype(4, torch.device("cpu"), torch.float32)
    fake = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)
    with pytest.raises(FlagError, match="needs fp16 or bf16.*--dtype bfloat16"):
        attention.apply(fake, None, "flash")


def test_cuda_graphs_conflicts_and_compile_graph_modes() -> None:
    from reference_model.enhancements import compile as compile_flag

    for flags in ("cuda-graphs,speculative=2", "mod=0.5,cuda-graphs"):
        with pytest.raises(FlagError, match="cannot combine"):
            parse_flags(flags, device="cuda")
    for mode in ("reduce-overhead", "max-autotune"):
        with pytest.raises(FlagError, match="KV caches mutated in place"):
            compile_flag.check_backend(torch.device("cuda"), mode)


def test_out_of_memory_during_capture_is_not_a_usage_error() -> None:
    from reference_model.enhancements import cuda_graphs

    def fake(raise_exc: BaseException):
        def warm_up(steps):
            raise raise_exc

        stage = lambda *a: None  # noqa: E731
        return SimpleNamespace(
            device=torch.device("cuda"),
            lm=SimpleNamespace(context=8),
            streamer=SimpleNamespace(temporal_step=stage, depformer_sample=stage),
            codec_encode=stage,
            codec_decode=stage,
            max_delay=1,
            warm_up=warm_up,
        )

    with pytest.raises(torch.cuda.OutOfMemoryError):
        cuda_graphs.apply(fake(torch.cuda.OutOfMemoryError("CUDA out of memory")), True)
    with pytest.raises(FlagError, match="capture failed"):
        cuda_graphs.apply(fake(RuntimeError("operation not permitted when stream is capturing")), True)


def test_bf16_lm_with_its_fp32_codec_streams_on_cpu() -> None:
    duplex = build_duplex(DuplexSpec(dtype=torch.bfloat16, batch_size=2, seed=0))
    assert duplex.lm.dtype == torch.bfloat16 and next(duplex.codec.parameters()).dtype == torch.float32
    pcm = torch.randn(2, 1, duplex.frame_size) * 0.1  # fp32 PCM, as the harness hands it
    for _ in range(duplex.max_delay + 2):
        text, out = duplex.step(pcm.to(torch.bfloat16))  # any float dtype in: cast to the codec's
    assert text is not None and out.dtype == torch.float32 and torch.isfinite(out).all()
    report = duplex.report()
    assert report.dtype == "bfloat16" and report.codec_dtype == "float32"


def test_fidelity_keeps_each_frames_logits_when_the_step_reuses_one_buffer() -> None:
    """Under cuda-graphs the text logits are the graph's static output buffer; fidelity must copy them."""
    from vemi_eval.measurements.fidelity import teacher_forced_logits, user_codes

    model = build_duplex(DuplexSpec(temp=0.0, temp_text=0.0, seed=0))
    streamer = model.streamer
    inner, buffer = streamer.temporal_step, {}

    def static_buffer_step(tokens, step, caches, condition=None):
        hidden, text = inner(tokens, step, caches, condition)
        out = buffer.setdefault("text", torch.empty_like(text))
        out.copy_(text)
        return hidden, out

    streamer.temporal_step = static_buffer_step
    codes = user_codes(model, 6, seed=3)
    forced = torch.zeros(6, 1, 1 + model.dep_q, dtype=torch.long)
    text, _ = teacher_forced_logits(model, codes, forced)
    assert not torch.equal(text[0], text[-1])  # every frame kept its own logits


def test_quantized_weights_are_cached_by_weights_and_method(monkeypatch, tmp_path) -> None:
    from reference_model.quant import models

    monkeypatch.setenv("VEMI_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "LM_CALIBRATION", {"frames": 6, "batch": 2, "seed": 0, "max_samples": 64})
    seen = []
    real = models.lm_calibration

    def spy(*args, **kwargs):
        stats = real(*args, **kwargs)
        seen.append({n: (s.gram is None, s.samples is None) for n, s in stats.items()})
        return stats

    monkeypatch.setattr(models, "lm_calibration", spy)

    def quantized(method: str):
        torch.manual_seed(0)
        lm = load_lm("tiny", "random")
        return lm, models.quantize_lm(lm, 4, method)

    lm_a, first = quantized("gptq")
    assert first.cache == "miss" and len(seen) == 1
    # GPTQ kept the Gram matrix (fp32) and no row subsample
    assert all(no_gram is False and no_samples is True for no_gram, no_samples in seen[0].values())
    lm_b, second = quantized("gptq")
    assert second.cache == "hit" and len(seen) == 1  # no calibration the second time
    assert second.quantized == first.quantized and second.skipped == first.skipped
    for (name, a), (_, b) in zip(lm_a.state_dict().items(), lm_b.state_dict().items()):
        assert torch.equal(a, b), name
    _, awq = quantized("awq")
    assert awq.cache == "miss" and len(seen) == 2  # another method, another entry
    assert all(no_gram is True and no_samples is False for no_gram, no_samples in seen[1].values())


def test_dtype_defaults_to_bf16_on_cuda_only() -> None:
    from vemi_eval.variant_models import default_dtype

    assert default_dtype("cuda") == "bfloat16" and default_dtype("cuda:1") == "bfloat16"
    assert default_dtype("cpu") == "float32"
