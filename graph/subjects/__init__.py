"""Data-subject requests and privacy duties: erasure (`forget_user`), export (`export_user`),
consent per purpose (`set_consent`, `consents_of`) and retention of raw interactions
(`prune_interactions`)."""

from __future__ import annotations

from graph.subjects.consent import (
    DEFAULT_CONSENT,
    PURPOSES,
    consent_history,
    consents_of,
    parse_purpose,
    set_consent,
)
from graph.subjects.erasure import ForgetReport, forget_user, subject_nodes
from graph.subjects.export import export_user
from graph.subjects.retention import prune_interactions

__all__ = [
    "DEFAULT_CONSENT",
    "PURPOSES",
    "ForgetReport",
    "consent_history",
    "consents_of",
    "export_user",
    "forget_user",
    "parse_purpose",
    "prune_interactions",
    "set_consent",
    "subject_nodes",
]
