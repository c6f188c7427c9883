"""speculative=K: greedy output identical to the baseline; sampled output distributed as the target."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy.stats import chisquare

from reference_model import DuplexSpec, FlagError, build_duplex, parse_flags
from reference_model.enhancements.speculative import SpecStats, sampling_probs, speculative_sample, verify
from reference_model.report import SpeculativeReport


def _stream(flags: str | None, steps: int, temp: float = 0.0) -> tuple[torch.Tensor, object]:
    duplex = build_duplex(DuplexSpec(lm="tiny", codec="tiny", flags=flags, temp=temp, temp_text=temp, seed=0))
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        tokens = duplex.lm_step(torch.randint(0, 2048, (1, 8, 1), generator=gen))
        if tokens is not None:
            out.append(tokens)
    return torch.cat(out, dim=2), duplex


def test_greedy_speculative_equals_baseline_token_for_token() -> None:
    torch.set_num_threads(1)
    steps = 52
    base, base_model = _stream(None, steps)
    # K = 3 does not divide dep_q = 8: the last round of every frame is a short one.
    spec, model = _stream("speculative=3", steps)
    assert spec.shape == base.shape == (1, 9, steps - 1)
    assert torch.equal(spec, base)
    stats = model.report().get(SpeculativeReport).stats
    assert stats.frames == steps and stats.committed == steps * 8
    assert 0.0 <= stats.acceptance_rate <= 1.0 and stats.rounds >= steps * 8 / 4
    # the logits kept for the fidelity suite are the target's, as the baseline loop leaves them
    torch.testing.assert_close(model.streamer.last_audio_logits, base_model.streamer.last_audio_logits)


def test_sampled_speculative_streams() -> None:
    torch.set_num_threads(1)
    tokens, model = _stream("speculative=8", 6, temp=0.8)
    assert tokens.shape == (1, 9, 5) and int(tokens[:, 1:].min()) >= 0 and int(tokens[:, 1:].max()) < 2048
    assert model.report().get(SpeculativeReport).stats.proposed > 0


# --- the rejection rule, on a small vocabulary with known target and draft -----------------------------

V, N_TOKENS, TEMP, TOP_K = 4, 3, 0.9, 3
_gen = torch.Generator().manual_seed(0)
TARGET = torch.randn(V + 1, N_TOKENS, V, generator=_gen) * 1.5  # logits given (previous token, position)
DRAFT = torch.randn(V + 1, N_TOKENS, V, generator=_gen) * 1.5
TEXT = V  # the "text token" that starts the chain


def _target_joint() -> dict[tuple[int, ...], float]:
    """Exact law of the 3-token chain under the baseline sampler (temp, top-k)."""
    law = {}
    for seq in itertools.product(range(V), repeat=N_TOKENS):
        prob, prev = 1.0, TEXT
        for pos, tok in enumerate(seq):
            prob *= float(sampling_probs(TARGET[prev, pos], TEMP, TOP_K)[tok])
            prev = tok
        law[seq] = prob
    return law


def _propose(hidden, prefix, m, temp, top_k):
    j = prefix.shape[1] - 1
    prev, tokens, probs = prefix[:, -1], [], []
    for t in range(m):
        q = sampling_probs(DRAFT[prev, j + t], temp, top_k)
        prev = torch.multinomial(q, 1)[:, 0]
        tokens.append(prev)
        probs.append(q)
    return torch.stack(tokens, 1), torch.stack(probs, 1)


def _parallel(hidden, tokens_in, start):
    return torch.stack([TARGET[tokens_in[:, i], i] for i in range(start, tokens_in.shape[1])], dim=1)


def _chi_square(counts: dict, law: dict, n: int) -> float:
    cells = [c for c in law if law[c] * n >= 5]  # pool the rare cells so the test stays valid
    obs = [counts.get(c, 0) for c in cells] + [n - sum(counts.get(c, 0) for c in cells)]
    exp = [law[c] * n for c in cells] + [n * (1 - sum(law[c] for c in cells))]
    exp = [e * sum(obs) / sum(exp) for e in exp]  # float rounding only: scipy wants equal totals
    return float(chisquare(obs, exp).pvalue)


# batch 1 exercises multi-token acceptance and bonus tokens; batch 4 the batch-common commit.
@pytest.mark.parametrize("k, batch, n_samples", [(3, 1, 2000), (2, 4, 3000)])
def test_rejection_sampling_keeps_the_target_distribution(k: int, batch: int, n_samples: int) -> None:
    torch.manual_seed(1234)
    law = _target_joint()
    counts: dict[tuple[int, ...], int] = {}
    n = 0
    stats = SpecStats(k=k)
    while n < n_samples:
        text = torch.full((batch,), TEXT)
        tokens, _ = speculative_sample(
            torch.zeros(batch, 1), text, n_tokens=N_TOKENS, k=k, propose=_propose,
            parallel_logits=_parallel, temp=TEMP, top_k=TOP_K, stats=stats,
        )  # fmt: skip
        for row in tokens.tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
            n += 1
    assert _chi_square(counts, law, n) > 1e-3
    assert 0.2 < stats.acceptance_rate < 0.95  # the drafts do get rejected: the rule is exercised


def test_chi_square_detects_a_wrong_rule() -> None:
    """Power check: taking the draft's tokens unchecked fails the same test."""
    torch.manual_seed(1234)
    law = _target_joint()
    counts: dict[tuple[int, ...], int] = {}
    n = 6000
    tokens, _ = _propose(None, torch.full((n, 1), TEXT), N_TOKENS, TEMP, TOP_K)
    for row in tokens.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert _chi_square(counts, law, n) < 1e-6


def test_single_position_rule_matches_target_marginal() -> None:
    torch.manual_seed(7)
    n = 40000
    target = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]]).expand(n, 1, 5)
    q = torch.tensor([0.05, 0.1, 0.5, 0.25, 0.1])
    drafts = torch.multinomial(q, n, replacement=True)[:, None]
    verdict = verify(target, drafts, q.expand(n, 1, 5), temp=0.8, top_k=4)
    first = verdict.tokens[:, 0]
    p = sampling_probs(target[0, 0], 0.8, 4)
    obs = torch.bincount(first, minlength=5).double()
    assert obs[p == 0].sum() == 0  # never a token outside the top-k
    keep = p > 0
    expected = p[keep].double() / p[keep].double().sum() * n
    assert chisquare(obs[keep].numpy(), expected.numpy()).pvalue > 1e-3


def test_greedy_rule_accepts_longest_agreeing_prefix() -> None:
    target = torch.zeros(1, 4, 6)
    target[0, torch.arange(4), torch.tensor([1, 2, 3, 4])] = 1.0  # argmax 1, 2, 3, 4
    verdict = verify(target, torch.tensor([[1, 2, 5]]), None, temp=0.0, top_k=0)
    assert verdict.n_accepted.tolist() == [2] and verdict.n_new.tolist() == [3]
    assert verdict.tokens[0, :3].tolist() == [1, 2, 3]
    verdict = verify(target, torch.tensor([[1, 2, 3]]), None, temp=0.0, top_k=0)
    assert verdict.n_new.tolist() == [4] and verdict.tokens[0].tolist() == [1, 2, 3, 4]  # bonus token


@pytest.mark.parametrize("bad", ["speculative=0", "speculative=-2", "speculative=abc", "speculative=2.5"])
def test_bad_k_is_one_line(bad: str) -> None:
    with pytest.raises(FlagError) as err:
        parse_flags(bad)
    assert "speculative" in str(err.value) and "\n" not in str(err.value)


def test_k_above_dep_q_is_one_line() -> None:
    with pytest.raises(FlagError) as err:
        build_duplex(DuplexSpec(lm="tiny", codec="tiny", flags="speculative=9"))
    assert "dep_q" in str(err.value) and "\n" not in str(err.value)


def test_cached_verifier_matches_the_full_parallel_pass() -> None:
    """Round by round (rewriting rejected slots), the cached pass gives the from-zero pass's logits."""
    from reference_model.enhancements.speculative import CachedVerifier
    from reference_model.lm import load_lm

    torch.manual_seed(0)
    lm = load_lm("tiny")
    verifier = CachedVerifier(lm, batch_size=2)
    hidden = torch.randn(2, lm.dim)
    with torch.no_grad():
        tokens = torch.randint(0, 2048, (2, lm.dep_q))
        tokens[:, 0] %= lm.text_card  # the first input of the depth pass is the text token
        rejected = torch.randint(0, 2048, (2, 5))
        rejected[:, 0] %= lm.text_card
        verifier(hidden, rejected, 0)  # a round whose drafts get rejected
        for start, end in ((0, 3), (3, 6), (6, 8)):
            got = verifier(hidden, tokens[:, :end], start)
            want = lm.depformer_forward_parallel(hidden, tokens[:, :end])[:, start:]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _toy_target(n_tokens: int, vocab: int = 16, batch: int = 3):
    """A target whose next-token logits depend on the position and the previous token only."""
    table = torch.randn(n_tokens, vocab, vocab, generator=torch.Generator().manual_seed(5))

    def parallel(hidden, tokens_in, j):
        return torch.stack([table[p, tokens_in[:, p]] for p in range(j, tokens_in.shape[1])], dim=1)

    def greedy(prefix, m, wrong: bool):
        seq = prefix.clone()
        for _ in range(m):
            p = seq.shape[1] - 1
            tok = table[p, seq[:, -1]].argmax(-1)
            seq = torch.cat([seq, ((tok + 1) % vocab if wrong else tok)[:, None]], dim=1)
        return seq[:, prefix.shape[1] :]

    text = torch.randint(0, vocab, (batch,), generator=torch.Generator().manual_seed(6))
    return table, parallel, greedy, text


@pytest.mark.parametrize(("wrong", "rate"), [(False, 1.0), (True, 0.0)])
def test_a_draft_equal_to_the_target_is_always_accepted(wrong: bool, rate: float) -> None:
    """Acceptance is exactly 1 for a draft that proposes the target's own greedy tokens and exactly 0 for
    one that never does; the output is the target's greedy sequence either way."""
    n_tokens, k = 8, 3
    table, parallel, greedy, text = _toy_target(n_tokens)
    stats = SpecStats(k=k)
    tokens, _ = speculative_sample(
        torch.zeros(3, 1),
        text,
        n_tokens=n_tokens,
        k=k,
        propose=lambda hidden, prefix, m, temp, top_k: (greedy(prefix, m, wrong), None),
        parallel_logits=parallel,
        temp=0.0,
        top_k=0,
        stats=stats,
    )
    assert torch.equal(tokens, greedy(text.view(-1, 1), n_tokens, wrong=False))
    assert stats.acceptance_rate == rate
