"""Between runs, users who arrive are put into the nearest leaf segment of the latest run.

Ingestion calls this after each committed batch, so a chatbot sees a persona for a newcomer
without waiting for the next full segmentation. The run's saved preparation pipeline and model
(``PERSONAS_RUNS_DIR/<run id>/``) turn the user's features into the run's space; the nearest
leaf centre decides.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from graph.db import Graph
from graph.errors import NotFound
from graph.segments import queries as q

log = logging.getLogger(__name__)


class SegmentAssigner:
    """Assigns unsegmented users to the latest run; the run's model is loaded once per run."""

    def __init__(self, graph: Graph, runs_dir: Path) -> None:
        self.graph = graph
        self.runs_dir = runs_dir
        self._run_id: str | None = None
        self._artifacts: Any = None
        self._personas: dict[str, str] = {}
        self._topics: list[Any] = []
        # One writer serves concurrent requests in the API (and its preload runs beside them):
        # a run's model is loaded once, and no batch sees it half-swapped.
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str | None:
        """The run whose model is loaded, if any."""
        return self._run_id if self._artifacts is not None else None

    def _model(self, run_id: str) -> tuple[Any, dict[str, str]] | None:
        """The run's model and its segments' personas, loaded on first use."""
        with self._lock:
            if run_id != self._run_id:
                self._load(run_id)
            return None if self._artifacts is None else (self._artifacts, self._personas)

    def _load(self, run_id: str) -> None:
        from graph.segments.artifacts import load  # scikit-learn only when a run exists

        # Forget the previous run's model first: should loading fail, no newcomer may be given
        # that run's labels. The run counts as loaded only once its files were read (or found
        # missing), so a load that failed otherwise is tried again with the next newcomer.
        self._run_id, self._artifacts, self._personas = None, None, {}
        try:
            artifacts = load(self.runs_dir, run_id)
        except NotFound:
            log.warning("run %s has no saved model in %s; newcomers wait for the next run",
                        run_id, self.runs_dir)
            self._run_id = run_id
            return
        personas = {r["segment_id"]: r["persona_id"]
                    for r in self.graph.rows(q.PREVIOUS_RUN_PERSONAS) if r["run_id"] == run_id}
        from graph.features.text import Topic

        stored = self.graph.rows(q.RUN_TOPICS, run_id=run_id)
        self._topics = [Topic.from_dict(t) for t in
                        json.loads((stored[0]["topics"] if stored else None) or "[]")]
        self._run_id, self._artifacts, self._personas = run_id, artifacts, personas

    def preload(self) -> bool:
        """Load the latest run's model and compile what ``assign`` runs, now rather than in the
        first batch that brings a newcomer (2-3 s on two cores, which that batch's events would
        wait for); returns whether a run with a saved model exists."""
        found = self.graph.rows(q.LATEST_RUN)
        model = self._model(found[0]["id"]) if found else None
        if model is None:
            return False
        from graph.features.table import features_of_users

        # Each statement once with one row that names nobody: Neo4j compiles it and keeps the
        # plan. Not an empty list: the plan cache tells it from a list of strings or maps.
        self.graph.rows(q.UNSEGMENTED, ids=[""])
        artifacts, _ = model
        features_of_users(self.graph, [""], artifacts.feature_names)
        self._record(found[0]["id"], [{"user_id": "", "segment_id": "", "distance": 0.0}],
                     [{"user_id": "", "persona_id": ""}], datetime.now(UTC))
        return True

    def assign(self, user_ids: Sequence[str], now: datetime | None = None) -> int:
        """Give each of ``user_ids`` that the latest run lacks its nearest leaf segment and
        persona; returns how many were assigned."""
        if not user_ids:
            return 0
        found = self.graph.rows(q.UNSEGMENTED, ids=list(user_ids))
        model = self._model(found[0]["run_id"]) if found and found[0]["user_ids"] else None
        if model is None:
            return 0
        from graph.features.table import features_of_users  # networkx, scipy: only when used

        run_id: str = found[0]["run_id"]
        art, personas = model
        now = now or datetime.now(UTC)
        # Features as the run measured them: recency against the run's reference time (a run
        # from before runs stored one measured it against its clock).
        as_of = found[0]["as_of"]
        table = features_of_users(self.graph, found[0]["user_ids"], art.feature_names,
                                  as_of.to_native() if as_of is not None else now,
                                  topics=self._topics)
        Z = art.preparation.transform(table.X)
        labels = art.model.predict(Z)
        distances = np.sqrt(((Z - art.model.cluster_centers_[labels]) ** 2).sum(axis=1))
        members = [{"user_id": uid, "segment_id": f"{run_id}-L0-{int(label)}",
                    "distance": float(d)}
                   for uid, label, d in zip(table.user_ids, labels, distances, strict=True)]
        history = [{"user_id": m["user_id"], "persona_id": personas[m["segment_id"]]}
                   for m in members if m["segment_id"] in personas]

        self._record(run_id, members, history, now)
        log.info("assigned %d new user(s) to segments of %s", len(members), run_id)
        return len(members)

    def _record(self, run_id: str, members: list[dict[str, Any]],
                history: list[dict[str, Any]], now: datetime) -> None:
        def write(tx: Any) -> None:
            tx.run(q.ASSIGN_USERS, run_id=run_id, assigned_by="ingest", rows=members).consume()
            tx.run(q.UPDATE_PERSONA_HISTORY, run_id=run_id, at=now.isoformat(),
                   rows=history).consume()

        self.graph.write(write)
