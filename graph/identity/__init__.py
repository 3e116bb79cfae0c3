"""Identity resolution: merging the users that several identifiers turn out to name, and undoing
it (``merge.py``; Cypher in ``queries.py``)."""

from graph.identity.merge import (
    merge_by_authority,
    merge_by_authority_tx,
    merge_users,
    merge_users_async,
    merge_users_tx,
    merge_users_work,
    merges_of,
    merges_of_async,
    resolve_user,
    resolve_users,
    resolve_users_tx,
    unmerge,
    unmerge_async,
    unmerge_tx,
    unmerge_work,
)

__all__ = [
    "merge_by_authority",
    "merge_by_authority_tx",
    "merge_users",
    "merge_users_async",
    "merge_users_tx",
    "merge_users_work",
    "merges_of",
    "merges_of_async",
    "resolve_user",
    "resolve_users",
    "resolve_users_tx",
    "unmerge",
    "unmerge_async",
    "unmerge_tx",
    "unmerge_work",
]
