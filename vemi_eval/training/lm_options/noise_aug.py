"""Option ``noise-aug`` (enhancement 6.3): noise augmentation of the user channel during training.

Multi-condition training: ``copies`` augmented versions of every training session's user channel are
rendered once (white noise, babble or reverberation, drawn per session and copy; SNR uniform in
``snr_db`` for the noises, RT60 uniform in ``rt60_s`` for reverberation), tokenised with the corpus's
codec and cached (vemi_eval.data.dialogue_noise). At each step every batch item, with probability ``p``,
has its user codebooks replaced by those of one of its copies at the same crop. Only the user's streams
change: the model's text and audio targets, and every other item, are the plain recipe's.

Babble for training is made of other espeak speakers than the measurement's (``babble_offset``), so the
noisy held-out figures are not on signals seen in training.

At full scale on a user's data: tokenise augmented user channels the same way and pass their folders
(``--option-arg noise-aug.copy_data=DIR1,DIR2``: token grids with the same tensor names and shapes as
--data; only their user rows are read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .base import LMOption, OptionContext, OptionError

TRAIN_BABBLE_OFFSET = 4  # the measurement's babble uses the first 4 espeak training speakers
# The bundled LM recipe's own noise (issue 36: the LM trained on clean and 10-40 dB white/pink users fell
# from 0.80 to 0.58 answer accuracy at 20 dB, 0.34 at 10 dB): white, pink or babble at 0-30 dB, or
# reverberation, on half the batch items. `vemi-eval train lm --no-user-noise` turns it off (ablations).
DEFAULT_USER_NOISE_KINDS = ("white", "pink", "babble", "reverb")
DEFAULT_USER_NOISE_SNR_DB = (0.0, 30.0)


@dataclass
class NoiseAugmentation(LMOption):
    name: ClassVar[str] = "noise-aug"
    needs_base_grids: ClassVar[bool] = True
    kinds: tuple[str, ...] = ("white", "babble", "reverb")
    snr_db: tuple[float, ...] = (0.0, 20.0)  # uniform range
    rt60_s: tuple[float, ...] = (0.3, 1.0)  # uniform range
    copies: int = 1  # noisy versions per session (at 50 steps x 8 items x p, a session is drawn ~2 times)
    p: float = 0.5  # share of batch items whose user channel is an augmented copy
    copy_data: tuple[str, ...] = ()  # a user's augmented token folders (instead of the corpus)

    def __post_init__(self) -> None:
        from vemi_eval.data.dialogue_noise import NOISE_KINDS

        bad = [k for k in self.kinds if k not in NOISE_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be among {', '.join(NOISE_KINDS)}, got {list(self.kinds)}")
        for key in ("snr_db", "rt60_s"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"{key} must be a range LOW,HIGH, got {list(lo_hi)}")
        if self.rt60_s[0] <= 0:
            raise ValueError(f"rt60_s must be > 0, got {list(self.rt60_s)}")
        if self.copies < 1:
            raise ValueError(f"copies must be >= 1, got {self.copies}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")

    def conditions(self, copy: int):
        """Session -> its augmentation in copy ``copy``: drawn from the session's seed and the recipe,
        not from the training seed (the augmented data are the same for every seed of an experiment)."""
        from vemi_eval.data.dialogue_noise import UserCondition, condition_seed

        def pick(session) -> UserCondition:
            rng = np.random.default_rng(condition_seed("noise-aug", session.seed, copy))
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            seed = int(rng.integers(2**31))
            if kind == "reverb":
                return UserCondition(kind, rt60_s=float(rng.uniform(*self.rt60_s)), seed=seed)
            return UserCondition(kind, snr_db=float(rng.uniform(*self.snr_db)), seed=seed)

        return pick

    def setup(self, ctx: OptionContext) -> None:
        self.base = ctx.train.grids
        n_user = ctx.cfg.n_q - ctx.cfg.dep_q
        self.user_from = 1 + ctx.cfg.dep_q
        if self.copy_data:
            from ..lm_objective import load_token_folder

            copies = [
                [g[self.user_from :] for g in load_token_folder(f, ctx.cfg.n_q + 1).grids]
                for f in self.copy_data
            ]
        elif ctx.corpus is not None:
            from vemi_eval.data.dialogue_noise import user_codes

            key = {
                "name": "noise-aug",
                "kinds": list(self.kinds),
                "snr_db": list(self.snr_db),
                "rt60_s": list(self.rt60_s),
            }
            copies = [
                [
                    torch.from_numpy(c)
                    for c in user_codes(
                        ctx.corpus.split,
                        self.conditions(k),
                        {**key, "copy": k},
                        ctx.corpus.codec_checkpoint,
                        limit=ctx.corpus.train_sessions,
                        codebooks=n_user,
                        babble_offset=TRAIN_BABBLE_OFFSET,
                        log=ctx.log,
                    )
                ]
                for k in range(self.copies)
            ]
        else:
            raise OptionError(
                "noise-aug: with --data, give augmented token folders "
                "(--option-arg noise-aug.copy_data=DIR,...)"
            )
        self.copies_codes: list[list[torch.Tensor]] = []
        for codes in copies:
            if len(codes) != len(self.base):
                raise OptionError(
                    f"noise-aug: {len(codes)} augmented sessions for {len(self.base)} training grids"
                )
            fitted = []
            for i, (c, g) in enumerate(zip(codes, self.base)):
                if c.shape[0] != n_user or c.shape[1] < g.shape[1]:
                    raise OptionError(
                        f"noise-aug: augmented user codes {list(c.shape)} of grid {i} do not cover its "
                        f"{n_user} user streams x {g.shape[1]} frames"
                    )
                fitted.append(c[:, : g.shape[1]].to(torch.long))
            self.copies_codes.append(fitted)
        self.items = 0
        self.augmented = 0

    def transform(
        self, batch: torch.Tensor, plan: list[tuple[int, int]], grids: list[torch.Tensor]
    ) -> torch.Tensor:
        if grids is not self.base:
            raise OptionError("noise-aug needs the plain training grids (another option replaced them)")
        pick = self.rng.random(len(plan)) < self.p
        which = self.rng.integers(len(self.copies_codes), size=len(plan))
        for b, ((i, start), on, k) in enumerate(zip(plan, pick, which)):
            self.items += 1
            if not on:
                continue
            user = self.copies_codes[int(k)][i][:, start : start + batch.shape[2]]
            batch[b, self.user_from :, : user.shape[1]] = user
            self.augmented += 1
        return batch

    def report(self) -> dict[str, Any]:
        return {
            **({"base_recipe": True} if self.in_base_recipe else {}),
            "items_this_process": self.items,
            "augmented_items_this_process": self.augmented,
            "babble_speakers_offset": TRAIN_BABBLE_OFFSET,
        }


def default_user_noise() -> NoiseAugmentation:
    """The noise every LM trained by the bundled recipe hears on its user channel (see above)."""
    noise = NoiseAugmentation(kinds=DEFAULT_USER_NOISE_KINDS, snr_db=DEFAULT_USER_NOISE_SNR_DB)
    noise.in_base_recipe = True
    return noise
