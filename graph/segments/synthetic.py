"""Generated feature matrices with planted, nested groups: for tests and benchmarks of the engine.

Parent groups lie far apart; each parent's child groups lie closer together around it, so a good
hierarchy finds the children as leaves and the parents one level up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class PlantedPopulation:
    X: NDArray[np.float64]
    leaf: NDArray[np.int64]
    """Planted child group of each user (0 .. parents x children - 1)."""
    parent: NDArray[np.int64]
    """Planted parent group of each user."""


def planted_population(
    n: int,
    n_features: int,
    *,
    parents: int = 2,
    children: int = 3,
    parent_spread: float = 4.0,
    child_spread: float = 1.5,
    noise: float = 0.6,
    log_columns: Sequence[int] = (),
    seed: int = 0,
) -> PlantedPopulation:
    """``n`` users in ``parents`` x ``children`` groups of random sizes.

    Centres are drawn at ``parent_spread`` (parents) and ``child_spread`` (children around their
    parent) standard deviations; users scatter around their child centre with ``noise``.
    ``log_columns`` are made heavy-tailed like spend or frequency (``expm1`` of the value).
    """
    rng = np.random.default_rng(seed)
    parent_centers = rng.normal(0.0, parent_spread, size=(parents, n_features))
    child_centers = (np.repeat(parent_centers, children, axis=0)
                     + rng.normal(0.0, child_spread, size=(parents * children, n_features)))
    weights = rng.uniform(0.5, 1.5, size=parents * children)
    leaf = rng.choice(parents * children, size=n, p=weights / weights.sum()).astype(np.int64)
    X = child_centers[leaf] + rng.normal(0.0, noise, size=(n, n_features))
    for j in log_columns:
        X[:, j] = np.expm1(np.abs(X[:, j]) + 0.5)
    return PlantedPopulation(X, leaf, leaf // children)
