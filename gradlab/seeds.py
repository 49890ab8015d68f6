"""The run's random streams: one ``SeedSequence(seed)`` spawns them all, so changing the
model never changes the data, and adding a stream never changes the others."""

import numpy as np

from gradlab.config import Config


def seed_streams(config: Config) -> list[np.random.SeedSequence]:
    """The data, init and batch seeds: one SeedSequence(seed) spawns all three, so changing
    the model never changes the data."""
    return np.random.SeedSequence(config.seed).spawn(3)


def dropout_stream(config: Config) -> np.random.SeedSequence:
    """The dropout masks' seed: the fourth child of SeedSequence(seed) (the first three,
    ``seed_streams``, are the same whether or not a fourth is spawned)."""
    return np.random.SeedSequence(config.seed).spawn(4)[3]
