"""The benchmarks' turn-taking rules beside ours on scripted word timings, where the figures are known,
including the cases where they disagree: a greeting before the user's turn ends and a short backchannel."""

from __future__ import annotations

import pytest

from vemi_eval.data.text_stream import TimedWord as W
from vemi_eval.evaluators import duplex_rules as r

TURN_END = 2.0


def seg(*words: W) -> r.Segment:
    return r.Segment(words[0].start, words[-1].end, tuple(words))


ANSWER = [W("the", 2.3, 2.5), W("answer", 2.5, 2.9), W("is", 2.9, 3.1), W("eight", 3.1, 3.6)]
GREETING = [W("hello", 0.1, 0.5), W("there", 0.5, 0.9), W("friend", 0.9, 1.3)]


def test_a_plain_answer_agrees_under_every_rule():
    fdb = r.fdb_smooth_turn(ANSWER, TURN_END)
    m3 = r.m3_smooth_turn([seg(*ANSWER)], TURN_END)
    ours = r.vemi_response(ANSWER, TURN_END, 10.0)
    assert fdb.taken and m3.taken and ours.taken
    assert fdb.latency_s == pytest.approx(0.3) and m3.latency_s == pytest.approx(0.3)
    assert ours.latency_s == pytest.approx(0.3)


def test_a_greeting_is_a_take_over_with_latency_zero_under_fdb_only():
    words = GREETING + ANSWER
    fdb = r.fdb_smooth_turn(words, TURN_END)
    assert fdb == r.TurnScore(True, 0.0)  # FDB #9: the greeting's start, clipped at 0
    m3 = r.m3_smooth_turn([seg(*GREETING), seg(*ANSWER)], TURN_END)
    assert m3.taken and m3.latency_s == pytest.approx(0.3)  # the greeting ends before the turn end
    assert r.vemi_response(words, TURN_END, 10.0).latency_s == pytest.approx(0.3)
    # a greeting alone, and silence after the turn: FDB still says the turn was taken; the others do not
    assert r.fdb_smooth_turn(GREETING, TURN_END).taken
    assert not r.m3_smooth_turn([seg(*GREETING)], TURN_END).taken
    assert not r.vemi_response(GREETING, TURN_END, 10.0).taken


def test_a_short_backchannel_is_no_turn_for_fdb_but_a_response_for_m3_and_us():
    bc = [W("mhm", 2.4, 2.7)]
    assert r.fdb_smooth_turn(bc, TURN_END) == r.TurnScore(False, None)  # < 1 s and <= 3 words
    m3 = r.m3_smooth_turn([seg(*bc)], TURN_END)  # allow_short_utterance: short ones count
    assert m3.taken and m3.latency_s == pytest.approx(0.4)
    assert r.vemi_response(bc, TURN_END, 10.0).latency_s == pytest.approx(0.4)
    # four quick words are a take-over for FDB although they last under a second
    quick = [W(f"w{i}", 2.1 + 0.2 * i, 2.25 + 0.2 * i) for i in range(4)]
    assert r.fdb_smooth_turn(quick, TURN_END).taken


def test_m3_allows_up_to_0_4_s_of_overlap_and_does_not_clip():
    early = [W("yes", 1.7, 2.4)]
    assert r.m3_smooth_turn([seg(*early)], TURN_END).latency_s == pytest.approx(-0.3)
    too_early = [W("yes", 1.5, 2.4)]
    assert not r.m3_smooth_turn([seg(*too_early)], TURN_END).taken
    assert r.fdb_smooth_turn([W("a", 1.5, 2.6)], TURN_END) == r.TurnScore(True, 0.0)


def test_pause_rules():
    pause = (3.0, 4.0)
    short = [W("mhm", 3.2, 3.4)]
    long_ = [W("well", 3.1, 3.5), W("i", 3.5, 3.7), W("think", 3.7, 4.3)]
    assert not r.fdb_pause(short) and r.fdb_pause(long_)
    assert not r.m3_pause([seg(*short)], *pause)  # a backchannel is no take-over
    assert r.m3_pause([seg(*long_)], *pause)
    assert r.vemi_pause(short, *pause) and not r.vemi_pause([W("x", 4.0, 4.2)], *pause)
    # FDB's pause TOR reads the whole output: talk long after the pause still counts
    assert r.fdb_pause([W("later", 9.0, 10.5)]) and not r.m3_pause([seg(W("later", 9.0, 10.5))], *pause)


def test_interruption_reads_only_what_follows_its_end():
    before = [W("so", 5.0, 5.5), W("as", 5.5, 6.0), W("i", 6.0, 6.2), W("said", 6.2, 7.0)]
    after = [W("sure", 8.5, 9.0), W("lets", 9.0, 9.4), W("talk", 9.4, 9.8)]
    score = r.fdb_interruption(before + after, 8.0)
    assert score.taken and score.latency_s == pytest.approx(0.5)
    assert r.m3_stop_latency([seg(*before), seg(*after)], 6.5) == pytest.approx(0.5)  # stops at 7.0
    assert r.m3_stop_latency([seg(*after)], 6.5) is None  # not speaking then (8.5 > 6.5 + 0.5)


def test_fdb_backchannel_frequency_and_jsd():
    vad = [(1.0, 1.4), (5.0, 5.3)]
    words = [W("mhm", 1.0, 1.4), W("yeah", 5.0, 5.3)]
    score = r.fdb_backchannel(vad, words, 10.0, reference=None)
    assert not score.take_over and score.frequency_hz == pytest.approx(0.2) and score.jsd is None
    # the same histogram as the reference: distance 0; a flat reference: > 0
    hist = [0.0] * 51
    for a, b in vad:
        for k in range(int(a / 0.2), int(b / 0.2) + 1):
            hist[k] += 1
    total = sum(hist)
    same = r.fdb_backchannel(vad, words, 10.0, reference=[h / total for h in hist])
    assert same.jsd == pytest.approx(0.0, abs=1e-4)
    flat = r.fdb_backchannel(vad, words, 10.0, reference=[1.0] * 10)
    assert 0.3 < flat.jsd <= 1.0
    assert r.fdb_backchannel([], [], 10.0, reference=[1.0, 1.0]).jsd == 1.0  # no backchannel at all
    # a segment over 3 s is the model taking the floor: counted up to there, then a take-over
    long_ = r.fdb_backchannel([(1.0, 1.4), (2.0, 6.0), (7.0, 7.2)], words, 10.0)
    assert long_.take_over and long_.frequency_hz == pytest.approx(0.1)
