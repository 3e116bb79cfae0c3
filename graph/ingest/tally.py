"""What loading records did, whatever the source: one tally for the file import, the Kafka
consumer, the HTTP and GraphQL batches, CRM files, the CRM webhook and ``upsertUser``.

Each source fills in the counts that apply to it and leaves the others at zero; the CLI prints
them in the source's words (``personas/cli/ingest.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass
class Tally:
    """Counts of one load (a file, a consumer run, a batch, a CRM transaction)."""

    records: int = 0
    """Records read: lines of a file, messages of a topic, records of a batch."""
    written: int = 0
    """Written now: events stored, or CRM records applied."""
    duplicates: int = 0
    """Events the graph held already (or that came earlier in the same batch)."""
    rejected: int = 0
    """Invalid or malformed records: dead-lettered (files, the consumer, the webhook) or
    answered as rejected (HTTP and GraphQL batches)."""
    erased: int = 0
    """Records refused because they name a user erased after their time (never dead-lettered:
    that would keep what the erasure removed)."""
    batches: int = 0
    """Batches committed (the consumer)."""
    users_created: int = 0
    fields_updated: int = 0
    """CRM profile fields written."""
    fields_kept: int = 0
    """CRM field values not written because the stored value is as new or newer."""
    merges: int = 0
    """Users merged into another because a record named identifiers of both."""
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    """Rejected records by reason code (the consumer)."""
    dead_letter: Path | None = None
    """The dead-letter file written, if any record went there (file imports)."""

    @property
    def messages(self) -> int:
        """The consumer's word for its records."""
        return self.records

    @property
    def dead_letters(self) -> int:
        """The consumer's word for its rejects, which all go to the dead letters."""
        return self.rejected

    @property
    def applied(self) -> int:
        """The CRM's word for records written."""
        return self.written

    def add(self, other: Tally) -> None:
        """Add ``other``'s counts to these (the dead-letter file is not a count: kept)."""
        for f in fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, int):
                setattr(self, f.name, mine + getattr(other, f.name))
        for code, n in other.rejected_by_code.items():
            self.rejected_by_code[code] = self.rejected_by_code.get(code, 0) + n
