"""Word and character error rates with jiwer, under ONE text normalisation used everywhere.

Normalisation: lower case, "&" -> "and", apostrophes dropped inside words (don't -> dont), every other
non-alphanumeric character -> space, whitespace collapsed, whole numbers below 10000 spelled out in words
(whisper writes "20" where the reference says "twenty"; "700" and "seven hundred" must score the same).
Error rates are corpus-level: total edits / total reference words (characters), not a mean of ratios.
"""

from __future__ import annotations

import re

from . import EvaluatorError, EvaluatorSpec

SPEC = EvaluatorSpec(
    name="wer", package="jiwer", needs_reference=False, needs_transcript=True, sample_rate=None
)

_APOSTROPHE = re.compile(r"(?<=\w)['\u2019](?=\w)")
_NON_WORD = re.compile(r"[^a-z0-9]+")


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen \
sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)")
_NUMBER = re.compile(r"\b\d{1,4}\b")


def number_words(n: int) -> str:
    """0 <= n < 10000 in words, without "and" (seven hundred five)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    return number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_words(n % 1000))


def normalize(text: str) -> str:
    t = text.lower().replace("&", " and ")
    t = _APOSTROPHE.sub("", t)
    t = t.replace(",", "")  # 1,000 -> 1000 (commas carry no words)
    t = _NON_WORD.sub(" ", t)
    t = _DIGIT_LETTER.sub(" ", t)  # 4am -> 4 am
    t = _NUMBER.sub(lambda m: number_words(int(m.group())), t)
    return " ".join(t.split())


def _check(refs: list[str], hyps: list[str]) -> tuple[list[str], list[str]]:
    if len(refs) != len(hyps):
        raise EvaluatorError(f"{len(refs)} references but {len(hyps)} hypotheses")
    r = [normalize(x) for x in refs]
    h = [normalize(x) for x in hyps]
    if not any(r):
        raise EvaluatorError("every reference transcript is empty after normalisation")
    empty = [i for i, x in enumerate(r) if not x]
    if empty:
        raise EvaluatorError(f"reference transcript {empty[0]} is empty after normalisation")
    return r, h


def error_counts(ref: str, hyp: str) -> dict[str, int]:
    """Edit counts of one pair (normalised): substitutions, deletions, insertions, hits, ref words/chars."""
    import jiwer

    r, h = _check([ref], [hyp])
    w = jiwer.process_words(r[0], h[0])
    c = jiwer.process_characters(r[0], h[0])
    return {
        "words": w.hits + w.substitutions + w.deletions,
        "word_errors": w.substitutions + w.deletions + w.insertions,
        "chars": c.hits + c.substitutions + c.deletions,
        "char_errors": c.substitutions + c.deletions + c.insertions,
    }


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER: total word edits / total reference words."""
    import jiwer

    r, h = _check(refs, hyps)
    return float(jiwer.wer(r, h))


def cer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    r, h = _check(refs, hyps)
    return float(jiwer.cer(r, h))
