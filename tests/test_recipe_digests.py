"""The digests that name trainings and caches stay byte-identical across refactors: a codec or LM training
resumes only under the digest it started with, and the dialogue corpus's cache folder is its recipe hash
(a changed hash silently re-synthesises the corpus and orphans the cache)."""

from __future__ import annotations

import shutil

import pytest

from reference_model.config import load_lm_config
from vemi_eval.data import dialogue
from vemi_eval.training.codec_recipes import CodecRecipe, named_recipes, with_options
from vemi_eval.training.lm import LMTrainRecipe

CODEC_DIGESTS = {
    "v2": "4fc1b4fb2cf68560",
    "v1-continue": "2b7f6c60ab35af2f",
    "v1-decoder": "0c58305a406629e5",
    "v1-decoder-gan": "2be587c12b330adb",
    "ab-seanet": "a7a5ab5f471df13f",
    "ab-istft": "217da4f7bcec0d30",
    "istft-full": "8a5e7a9985d5381d",
    "stft-full": "dbca414bb5799041",
    "istft-full-gan": "844959a0df025ffd",
    "istft-decoder": "907e6eefd11da6bf",
    "istft-decoder-gan": "b450c51253dcce3a",
    "istft-decoder-phase": "f996f652ac453042",
    "istft-decoder-voice": "1e70bbacc4ff5e7c",
}
CODEC_OPTION_DIGESTS = {
    "ervq": "15cdab88c160fc9c",
    "semantic-distill": "3300abd6f1d266e5",
    "multi-rate": "9e8701ec17a2f55e",
}


def test_every_named_codec_recipe_keeps_its_digest():
    assert {name: r.digest() for name, r in named_recipes().items()} == CODEC_DIGESTS


def test_codec_recipe_options_keep_their_digests():
    got = {name: with_options(CodecRecipe(), [name]).digest() for name in CODEC_OPTION_DIGESTS}
    assert got == CODEC_OPTION_DIGESTS


def test_lm_recipe_digests_are_unchanged():
    config = load_lm_config("tiny").to_dict()
    plain = LMTrainRecipe(config=config, data_sha256="d", data_source="s")
    full = LMTrainRecipe(
        config=config,
        data_sha256="d",
        data_source="s",
        max_steps=6,
        options=[{"name": "x"}],
        init_from={"path": "p", "sha256": "h"},
    )
    assert (plain.digest(), full.digest()) == ("ee79664b9b92987c", "57c7f1f855c3a402")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the recipe lists espeak-ng's variants")
def test_dialogue_corpus_recipe_and_split_hashes_are_unchanged():
    # fixed tool versions: the hash pins the code's recipe, not this machine's espeak/festival builds
    rec = dialogue.recipe({"espeak": "E", "festival": "F"})
    assert dialogue.recipe_hash(rec) == "962e9e6ae0835099"
    assert {s: dialogue.split_hash(s, rec) for s in dialogue.SPLITS} == {
        "train": "e18528ae179cf605",
        "train_aug": "afadcafdb63da99c",
        "train_aug_echo": "9910a4cd31362437",
        "train_aug_mix": "1322166b235e242b",
        "train_aug_f0": "0a6220c30d6c7417",
        "heldout": "1415dc2620990aa0",
    }


def test_the_cli_offers_every_named_codec_recipe():
    """`train codec --recipe` lists the names by hand (--help imports no torch): keep them in step."""
    from vemi_eval.cli.app import cli

    command = cli.commands["train"].commands["codec"]
    choice = next(p for p in command.params if p.name == "recipe_name").type
    assert sorted(choice.choices) == sorted(named_recipes())
