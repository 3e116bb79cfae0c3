"""Stable persona identity across runs: new segments are matched to the previous run's personas."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class PreviousPersona:
    persona_id: str
    name: str
    description: str
    center_raw: dict[str, float]
    """The previous segment's centre in raw feature units, by feature name."""


@dataclass(frozen=True)
class PersonaMatch:
    persona_id: str
    name: str
    description: str
    is_new: bool
    distance: float | None


def align_centers(previous: Sequence[PreviousPersona], names: Sequence[str],
                  fallback: FloatArray) -> FloatArray:
    """Previous centres as rows in the current feature order. A feature the previous run did not
    have takes the current population's mean (``fallback``): it does not count as a difference."""
    rows = np.tile(fallback, (len(previous), 1)).astype(np.float64)
    for r, p in enumerate(previous):
        for j, name in enumerate(names):
            if name in p.center_raw:
                rows[r, j] = p.center_raw[name]
    return rows


def match_personas(
    new_centers: FloatArray,
    new_names: Sequence[tuple[str, str]],
    previous: Sequence[PreviousPersona],
    previous_centers: FloatArray,
    threshold: float,
) -> list[PersonaMatch]:
    """One-to-one matching (Hungarian) of new segment centres to previous persona centres, both in
    the current run's standardized space. A matched segment keeps the persona's id; pairs farther
    apart than ``threshold`` do not match, and the segment becomes a new persona with a fresh id.

    Names and descriptions always come from the current run (``new_names``), since they describe
    how the segment differs from today's population; the id is what stays stable.
    """
    k = new_centers.shape[0]
    matched: dict[int, tuple[str, float]] = {}
    if previous:
        cost = np.sqrt(((new_centers[:, None, :] - previous_centers[None, :, :]) ** 2).sum(axis=2))
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if cost[r, c] <= threshold:
                matched[r] = (previous[c].persona_id, float(cost[r, c]))
    out: list[PersonaMatch] = []
    for r in range(k):
        name, description = new_names[r]
        if r in matched:
            persona_id, distance = matched[r]
            out.append(PersonaMatch(persona_id, name, description, False, distance))
        else:
            out.append(PersonaMatch(f"persona-{uuid.uuid4().hex[:12]}", name, description, True,
                                    None))
    return out
