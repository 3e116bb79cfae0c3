"""The dead-letter file: a JSON line per rejected record, with its line and reason, PII scrubbed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from graph.privacy import Pseudonymizer

MAX_RAW_CHARS = 2000


class DeadLetterFile:
    """Appends rejects to a JSON Lines file, created only when the first reject arrives."""

    def __init__(self, path: Path, source: str, pseudonymizer: Pseudonymizer) -> None:
        self.path = path
        self.source = source
        self.pseudonymizer = pseudonymizer
        self.count = 0

    def write(self, line: int, reason: str, raw: str) -> None:
        record = {
            "source": self.source,
            "line": line,
            "reason": self.pseudonymizer.scrub_text(reason),
            "record": self.pseudonymizer.scrub_text(raw[:MAX_RAW_CHARS]),
            "truncated": len(raw) > MAX_RAW_CHARS,
            "rejected_at": datetime.now(UTC).isoformat(),
        }
        if self.count == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.count += 1
