"""What a segmentation run leaves on disk: the fitted pipeline and model, and a sample to draw."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline

from graph.errors import InvalidInput, NotFound
from graph.segments.engine import HierarchicalSegmenter

SAMPLE = 20_000
FILE = "artifacts.joblib"
RUN_ID = re.compile(r"^run-[0-9T]+-[0-9a-f]{6}$")


@dataclass
class RunArtifacts:
    run_id: str
    preparation: Pipeline
    model: HierarchicalSegmenter
    feature_names: list[str]
    persona_names: list[str]
    Z_sample: NDArray[np.float64]
    labels_sample: NDArray[np.int64]

    @classmethod
    def build(cls, run_id: str, preparation: Pipeline, model: HierarchicalSegmenter,
              feature_names: list[str], persona_names: list[str], Z: NDArray[Any]) -> RunArtifacts:
        """Keep a fixed-size random sample of the prepared users, enough for every picture."""
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(Z.shape[0], size=min(SAMPLE, Z.shape[0]), replace=False))
        return cls(run_id, preparation, model, feature_names, persona_names,
                   np.asarray(Z[idx], dtype=np.float64), model.labels_[idx])


def run_dir(runs_dir: Path, run_id: str) -> Path:
    """The run's folder; the id is checked so it can never name a path outside ``runs_dir``."""
    if not RUN_ID.match(run_id):
        raise InvalidInput(f"{run_id!r} is not a segmentation run id")
    return runs_dir / run_id


def save(artifacts: RunArtifacts, runs_dir: Path) -> Path:
    folder = run_dir(runs_dir, artifacts.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(artifacts, folder / FILE)
    return folder


def load(runs_dir: Path, run_id: str) -> RunArtifacts:
    path = run_dir(runs_dir, run_id) / FILE
    if not path.exists():
        raise NotFound(f"no saved artifacts for run {run_id!r} in {runs_dir}")
    artifacts: RunArtifacts = joblib.load(path)
    return artifacts
