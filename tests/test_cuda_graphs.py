"""cuda-graphs: refused on CPU in one line; the static-buffer plumbing. The CUDA path itself is unverified
here (no GPU): the test that captures runs only where CUDA is available."""

from __future__ import annotations

import pytest
import torch

from reference_model import FlagError, parse_flags
from reference_model.enhancements.cuda_graphs import copy_into, signature


def test_flag_is_refused_on_cpu_in_one_line() -> None:
    with pytest.raises(FlagError) as err:
        parse_flags("cuda-graphs", device="cpu")
    msg = str(err.value)
    assert "needs a CUDA device" in msg and "\n" not in msg
    assert parse_flags("cuda-graphs", device="cuda")[0].name == "cuda-graphs"


def test_apply_refuses_a_cpu_model() -> None:
    from reference_model.enhancements.cuda_graphs import apply

    class CpuModel:
        device = torch.device("cpu")

    with pytest.raises(FlagError, match="needs a CUDA device"):
        apply(CpuModel(), True)


def test_a_new_shape_or_a_new_state_object_is_a_new_graph_and_tensors_are_copied_in() -> None:
    caches = [object()]
    a = signature((torch.zeros(2, 3), caches, None, 4))
    assert a == signature((torch.ones(2, 3), caches, None, 4))  # values do not matter, shapes do
    assert a != signature((torch.zeros(3, 3), caches, None, 4))
    assert a != signature((torch.zeros(2, 3), [object()], None, 4))
    assert a != signature((torch.zeros(2, 3), caches, None, 5))
    static = (torch.zeros(2), caches)
    copy_into(static, (torch.tensor([1.0, 2.0]), caches))
    assert static[0].tolist() == [1.0, 2.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_greedy_tokens_equal_eager_on_cuda() -> None:
    from reference_model import DuplexSpec, build_duplex

    def run(flags):
        d = build_duplex(DuplexSpec(device="cuda", batch_size=2, temp=0.0, temp_text=0.0, flags=flags))
        torch.manual_seed(1)
        pcm = torch.randn(24, 2, 1, d.frame_size, device="cuda") * 0.1
        out = []
        for i in range(24):
            if i == 10:
                d.reset(torch.tensor([False, True], device="cuda"))
            tokens = d.lm_step(d.encode_user(pcm[i]))
            if tokens is not None:
                d.decode_model(tokens.clamp_min(0))  # a just-reset row is -2 (not generated yet)
            out.append(None if tokens is None else tokens.clone())
        return d, out

    graphed, a = run("cuda-graphs")
    _, b = run(None)
    from reference_model.report import CudaGraphsReport

    entry = graphed.report().get(CudaGraphsReport)
    assert all(p.replays > 0 for p in entry.parts)
    assert "cuda_graphs_s" in graphed.report().build_stats()
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))
