"""Training-side enhancements: the recipe options that implement the document's training-only entries.

An inference-time enhancement is a flag of the model (reference_model.enhancements); a training-side one
is a recipe option of a trainer (``vemi-eval train codec|lm --recipe NAME``). Each option is declared here
once; the registry (suites/claims/enhancements.toml ``recipes = [...]``) counts an entry as implemented
when one of its options is declared, and the matrix attributes a measurement to it when the variant's
checkpoint was trained with the option and the baseline's was not.

How the option reaches a measurement: the trainer writes ``"trained_with": [option names]`` at the top of
the checkpoint's JSON sidecar; a suite variant that names the checkpoint carries it into results.json.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecipeOption:
    name: str  # what --recipe (or the trainer option) calls it, and what "trained_with" lists
    enhancement: str  # the registry id it implements ("3.3")
    trainer: str  # "codec" | "lm"
    summary: str  # what it changes in training, one line
    measured_as: str  # what the paired experiment measures: the claim's words, as this scale can read them


# One entry per option; the trainer that implements it is named by ``trainer``.
RECIPE_OPTIONS: tuple[RecipeOption, ...] = ()

# LM trainer (vemi_eval/training/lm_options/: one module per option)
RECIPE_OPTIONS += (
    RecipeOption(
        "distill",
        "4.1",
        "lm",
        "KL to a larger teacher's text and audio logits (temperature T, mixed with the hard labels); "
        "--teacher CHECKPOINT[:CONFIG]",
        "the distilled student's held-out teacher-forced task accuracy as a share of the teacher's",
    ),
    RecipeOption(
        "latency-curriculum",
        "4.3",
        "lm",
        "the training sessions' response gap shrinks in stages from 0.96 s to the target gap (0.32 s)",
        "held-out teacher-forced task accuracy at the target gap against training at it from the start",
    ),
    RecipeOption(
        "noise-aug",
        "6.3",
        "lm",
        "the user channel of half the batch items is a tokenised noisy copy (white, babble 0-20 dB; "
        "reverb RT60 0.3-1 s)",
        "held-out answer error rate with the user channel under white/babble (20-0 dB) and reverb",
    ),
    RecipeOption(
        "speaker-cond",
        "6.2",
        "lm",
        "speaker-embedding conditioning (the model voice's fixed d-vector through a learned projection, "
        "added to the input; exported folded into the text embedding) + a speaker-consistency loss "
        "(KL of the voice's acoustic-codebook usage histogram to the model's mean prediction on speech "
        "frames); vemi_eval/training/lm_options/speaker.py",
        "resemblyzer similarity of the model's decoded answers to a reference recording of its voice "
        "(dialogue kind: speaker_similarity), its drift along a session",
    ),
    RecipeOption(
        "dpo",
        "4.2",
        "lm",
        "automated preference optimisation: DPO (reference = the frozen warm start) on pairs the model "
        "samples itself on training prompts, ranked by an automatic reward (answer correctness, latency, "
        "speaker similarity); vemi_eval/training/lm_options/dpo.py",
        "the same automatic reward of the model's live conversations on held-out voices and phrasings, "
        "and the paired win rate against the baseline (preference kind)",
    ),
    RecipeOption(
        "prosody-cond",
        "6.1",
        "lm",
        "prosody conditioning: a requested pitch offset and level through a learned projection added to the "
        "input, learned from pitch-shifted, re-levelled renditions of the model voice's answers (tokenised "
        "once); the projection ships beside the plain LM; vemi_eval/training/lm_options/prosody.py",
        "DNSMOS of the model's decoded answers (naturalness), and how closely their F0 follows the "
        "requested offset (F0 error in semitones, slope), prosody kind",
    ),
)

# Codec trainer (vemi_eval/training/codec_recipes.py CODEC_OPTIONS says what each sets).
RECIPE_OPTIONS += (
    RecipeOption(
        name="ervq",
        enhancement="3.3",
        trainer="codec",
        summary="ERVQ: codes re-anchored toward their nearest encoder features the less they are used, a "
        "code-balancing (usage entropy) loss per codebook and a decorrelation loss between adjacent levels",
        measured_as="round-trip PESQ-WB/STOI at equal bitrate (8 codebooks) on held-out voices, beside "
        "per-level codebook usage entropy and perplexity (kind codebook_usage)",
    ),
    RecipeOption(
        name="semantic-distill",
        enhancement="3.1",
        trainer="codec",
        summary="the first codebook's output, linearly projected, pulled by cosine distance toward the "
        "bundled whisper tiny.en encoder's features (CTranslate2, pooled to 12.5 Hz) of each training batch",
        measured_as="round-trip PESQ-WB/STOI at equal bitrate (8 codebooks) on held-out voices against the "
        "same split RVQ trained without the target; the first codebook's content: WER of speech decoded from "
        "it alone",
    ),
    RecipeOption(
        name="multi-rate",
        enhancement="1.1",
        trainer="codec",
        summary="SNAC-style multi-rate RVQ: the first acoustic level quantizes the residual's mean over "
        "windows of 4 frames, the second over 2 (codes repeat over their window); the strides go into the "
        "codec config (quantizer.multi_rate_strides) and the weights' metadata",
        measured_as="time to first audio of a streamed round trip (kind first_audio) and PESQ-WB/STOI "
        "against bitrate (each level at its own rate) beside the single-rate codec",
    ),
)


def available_recipes() -> dict[str, RecipeOption]:
    """Option name -> its declaration."""
    return {r.name: r for r in RECIPE_OPTIONS}


def trained_with(sidecar: dict) -> tuple[str, ...]:
    """The recipe options a checkpoint's sidecar says it was trained with (none for older sidecars)."""
    names = sidecar.get("trained_with") or ()
    return tuple(str(n) for n in names)


def check_options(names: tuple[str, ...] | list[str], trainer: str) -> None:
    """Every name is a declared option of ``trainer``; else ValueError naming the first that is not."""
    known = sorted(r.name for r in RECIPE_OPTIONS if r.trainer == trainer)
    for n in names:
        if n not in known:
            raise ValueError(f"unknown {trainer} recipe option {n!r} (known: {', '.join(known) or 'none'})")
