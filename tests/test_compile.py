"""compile: the flag's checks (one-line errors) and compiled greedy tokens equal to eager."""

from __future__ import annotations

import pytest
import torch

from reference_model import FlagError, parse_flags
from reference_model.enhancements import compile as compile_flag


def test_bad_mode_is_one_line() -> None:
    with pytest.raises(FlagError) as err:
        parse_flags("compile=fastest")
    assert "unknown compile mode 'fastest'" in str(err.value) and "\n" not in str(err.value)
    assert parse_flags("compile")[0].value == "default"


def test_cuda_graph_modes_are_refused_on_cpu() -> None:
    for mode in ("reduce-overhead", "max-autotune"):
        with pytest.raises(FlagError, match="CUDA only"):
            compile_flag.check_backend(torch.device("cpu"), mode)
    compile_flag.check_backend(torch.device("cpu"), "max-autotune-no-cudagraphs")


def test_missing_cpp_compiler_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compile_flag.shutil, "which", lambda name: None)
    with pytest.raises(FlagError) as err:
        compile_flag.check_backend(torch.device("cpu"), "default")
    assert "needs a C++ compiler" in str(err.value) and "\n" not in str(err.value)


def test_compile_is_applied_before_cuda_graphs_whatever_the_written_order() -> None:
    # Was: an error asking the user to write compile first. Now the flags declare their order.
    names = [f.name for f in parse_flags("cuda-graphs,compile", device="cuda")]
    assert names == ["compile", "cuda-graphs"]


@pytest.mark.slow
def test_compiled_greedy_tokens_equal_eager_over_24_steps() -> None:
    """Minutes on a loaded 2-core machine (inductor compiles C++ for 4 parts); marked slow."""
    from reference_model import DuplexSpec, build_duplex

    torch.set_num_threads(1)
    spec = dict(lm="tiny", codec="tiny", batch_size=2, temp=0.0, temp_text=0.0, seed=0)
    compiled = build_duplex(DuplexSpec(**spec, flags="compile"))
    eager = build_duplex(DuplexSpec(**spec))
    from reference_model.report import CompileReport

    entry = compiled.report().get(CompileReport)
    assert entry.compile_s > 0 and entry.mode == "default"
    g = torch.Generator().manual_seed(3)
    pcm = torch.randn(24, 2, 1, eager.frame_size, generator=g) * 0.1
    n_compared = 0
    for i in range(24):
        if i == 12:  # one stream restarts: the ragged-position path
            mask = torch.tensor([False, True])
            compiled.reset(mask)
            eager.reset(mask)
        codes_c, codes_e = compiled.encode_user(pcm[i]), eager.encode_user(pcm[i])
        assert torch.equal(codes_c, codes_e)
        out_c, out_e = compiled.lm_step(codes_c), eager.lm_step(codes_e)
        assert (out_c is None) == (out_e is None)
        if out_c is not None:
            assert torch.equal(out_c, out_e), f"step {i}: compiled tokens differ from eager"
            n_compared += 1
            pcm_c = compiled.decode_model(out_c.clamp_min(0))
            pcm_e = eager.decode_model(out_e.clamp_min(0))
            assert torch.allclose(pcm_c, pcm_e, atol=1e-4)
    assert n_compared >= 20
