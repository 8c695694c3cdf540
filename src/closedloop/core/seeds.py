"""Seeds from a run's identity, never from its history.

Every use of randomness (a phase, a tuning trial, a cross-validation fold, a final-fit seed, an audit
fold, a monitor calibration window) takes its own seed from the run's seed and the use's place, e.g.
``derive_seed(run_seed, "train", "tune", "trial", 3)``. Nothing reads or advances a generator that an
earlier use touched, so a run resumed after a crash draws exactly what an uninterrupted run draws,
whatever ran (or was skipped) before. The mixing is numpy's ``SeedSequence``: nearby run seeds and
indices give unrelated streams (``seed * 1000 + k`` style arithmetic collides across uses).
"""

from __future__ import annotations

from zlib import crc32

import numpy as np


def seed_words(run_seed: int, *place: str | int) -> list[int]:
    """The entropy of one use: the run seed, then each part of its place (strings by CRC-32)."""
    words = [int(run_seed) % (1 << 64)]
    for part in place:
        if isinstance(part, bool) or not isinstance(part, int | str | np.integer):
            raise TypeError(f"derive_seed: a place is made of str and int parts, got {part!r}")
        words.append(crc32(part.encode()) if isinstance(part, str) else int(part) % (1 << 64))
    return words


def derive_seed(run_seed: int, *place: str | int) -> int:
    """A 63-bit seed (fits ``torch.manual_seed`` and every library) for ``place`` in the run."""
    state = np.random.SeedSequence(seed_words(run_seed, *place)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def derive_rng(run_seed: int, *place: str | int) -> np.random.Generator:
    """A numpy generator of its own for ``place`` in the run."""
    return np.random.default_rng(np.random.SeedSequence(seed_words(run_seed, *place)))
