"""Identity resolution: merging the users that several identifiers turn out to name, and undoing
it (``merge.py``; Cypher in ``queries.py``)."""

from graph.identity.merge import (
    merge_by_authority_tx,
    merge_users,
    merge_users_tx,
    merges_of,
    resolve_user,
    resolve_users_tx,
    unmerge,
    unmerge_tx,
)

__all__ = [
    "merge_by_authority_tx",
    "merge_users",
    "merge_users_tx",
    "merges_of",
    "resolve_user",
    "resolve_users_tx",
    "unmerge",
    "unmerge_tx",
]
