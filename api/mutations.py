"""GraphQL mutations: data sent in (writers) and jobs started (admins). Each names the roles it
admits (`graph.auth`) and goes through the same graph code as the other sources."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from api.auth import allowed
from api.request import RequestContext
from api.types.consistency import Consistency, written
from api.types.run import SegmentationRunResult
from api.types.subject import Erasure, Merge, Unmerge
from api.types.user import Consents, Preference, User, utc_or_none
from graph.auth import ADMINS, PERSONA_READERS, WRITERS
from graph.crm.importer import apply_records
from graph.crm.mapping import direct_mapping, parse_record
from graph.errors import Conflict, InvalidInput, LimitExceeded
from graph.events import normalize_category
from graph.identity.merge import merge_users_async, merges_of_async, unmerge_async
from graph.ingest.batch import RecordResult, count, ingest_records
from graph.ingest.writer import StatedPreference
from graph.privacy import IDENTIFIER_KINDS
from graph.profile import users
from graph.profile.model import UserRecord
from graph.subjects.consent import set_consent_async
from graph.subjects.erasure import forget_user
from graph.subjects.export import export_user

API_SOURCE = "api"
"""The provenance recorded for profile fields set through the API."""


@strawberry.type(description="What became of one record of an `ingestEvents` batch.")
class IngestResult:
    index: int = strawberry.field(description="Position of the record in the batch.")
    event_id: str | None
    status: str = strawberry.field(description="accepted (written now), duplicate (already "
                                   "stored, or repeated in the batch) or rejected.")
    reason: str | None = strawberry.field(description="Why it was rejected or a duplicate.")

    @classmethod
    def from_result(cls, r: RecordResult) -> IngestResult:
        return cls(index=r.index, event_id=r.event_id, status=r.status, reason=r.reason)


@strawberry.type
class IngestEventsResult:
    accepted: int
    duplicates: int
    rejected: int
    results: list[IngestResult]
    consistency: Consistency


@strawberry.input(description="An identifier in plaintext: hashed with the pseudonymization "
                  "key before anything is stored or logged.")
class IdentifierInput:
    kind: str = strawberry.field(description="crm_id, email, phone, chat_handle, cookie or "
                                 "device_id.")
    value: str


@strawberry.input(description="Profile fields of a user, as a CRM record would set them. "
                  "Fields left out are not touched.")
class ProfileInput:
    identifiers: list[IdentifierInput]
    at: datetime | None = strawberry.field(
        default=None, description="When these values were true at the source (default: now); "
        "a field stored with a newer time keeps its value.")
    age_band: str | None = None
    gender: str | None = None
    locale: str | None = None
    location_id: str | None = None
    city: str | None = None
    country: str | None = None
    first_name: str | None = strawberry.field(default=None,
                                              description="Stored only as a keyed hash.")
    last_name: str | None = strawberry.field(default=None,
                                             description="Stored only as a keyed hash.")
    tier: str | None = None
    lifetime_value: float | None = None
    loyalty_points: int | None = None
    marketing_opt_in: bool | None = None
    signup_date: date | None = None

    def record(self) -> dict[str, Any]:
        if not self.identifiers:
            raise InvalidInput("`identifiers` needs at least one identifier")
        unknown = sorted({i.kind for i in self.identifiers} - set(IDENTIFIER_KINDS))
        if unknown:
            raise InvalidInput(f"unknown identifier kind(s) {unknown}; one of "
                               f"{', '.join(IDENTIFIER_KINDS)}")
        at = utc_or_none(self.at, "at") or datetime.now(UTC)
        fields = {name: value.isoformat() if isinstance(value, date) else value
                  for name in PROFILE_INPUT_FIELDS
                  if (value := getattr(self, name)) is not None}
        return {**{i.kind: i.value for i in self.identifiers}, **fields,
                "at": at.isoformat()}


PROFILE_INPUT_FIELDS = ("age_band", "gender", "locale", "location_id", "city", "country",
                        "first_name", "last_name", "tier", "lifetime_value", "loyalty_points",
                        "marketing_opt_in", "signup_date")


@strawberry.type(description="What `upsertUser` did. A writer key gets ids and counts only: "
                 "the user's profile (`user`) is for the roles that may read users.")
class UpsertUserResult:
    user_id: strawberry.ID
    found: strawberry.Private[UserRecord]

    @strawberry.field(description="The user as they are now (reader, analyst and admin keys).",
                      extensions=allowed(PERSONA_READERS))
    def user(self) -> User:
        return User.from_model(self.found)

    created: bool = strawberry.field(description="True when no identifier was known yet.")
    fields_updated: list[str] = strawberry.field(
        description="Fields this call changed (the others were as new or newer already).")
    merges: int = strawberry.field(description="Users merged because the identifiers named "
                                   "more than one.")
    consistency: Consistency


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Ingest a batch of events (the envelope of `POST /v1/events`), in one "
        "transaction; one result per record. More than PERSONAS_API_MAX_BATCH_EVENTS records "
        "is LIMIT_EXCEEDED.", extensions=allowed(WRITERS))
    async def ingest_events(self, info: strawberry.Info[RequestContext, None],
                            events: list[JSON]) -> IngestEventsResult:
        received = time.monotonic()
        limit = info.context.settings.api_max_batch_events
        if len(events) > limit:
            raise LimitExceeded(f"{len(events)} events in one batch; at most {limit}")
        records: list[Any] = list(events)
        results = await asyncio.to_thread(ingest_records, info.context.writer, records,
                                          source="graphql", received_at=received)
        counts = count(results)
        return IngestEventsResult(
            accepted=counts.written, duplicates=counts.duplicates, rejected=counts.rejected,
            results=[IngestResult.from_result(r) for r in results],
            consistency=await written(info.context.reader.driver))

    @strawberry.mutation(
        description="Segment every user now, as `personas segment` does, and record the run. "
        "One run at a time: a call while one is in progress fails with CONFLICT.",
        extensions=allowed(ADMINS))
    async def run_segmentation(
        self, info: strawberry.Info[RequestContext, None],
        k: Annotated[int | None, strawberry.argument(
            description="Number of leaf segments (default: automatic).")] = None,
        algorithm: Annotated[str | None, strawberry.argument(
            description="agglomerative (default), kmeans, minibatch-kmeans, birch, dbscan or "
            "hdbscan.")] = None,
        features: Annotated[list[str] | None, strawberry.argument(
            description="Families or feature names (default: PERSONAS_SEGMENT_FEATURES).")
        ] = None,
        distance_threshold: Annotated[float | None, strawberry.argument(
            description="Cut the dendrogram at this merge distance instead of choosing k.")
        ] = None,
    ) -> SegmentationRunResult:
        result = await info.context.segmentation.run(
            k=k, algorithm=algorithm, features=features, distance_threshold=distance_threshold)
        return SegmentationRunResult.from_result(result)


    @strawberry.mutation(
        description="State a user's preference for a category (-1 dislike .. 1 like), as "
        "explicit feedback does. The latest statement by time wins: an older one than what is "
        "stored changes nothing.", extensions=allowed(WRITERS))
    async def set_preference(
        self, info: strawberry.Info[RequestContext, None], user_id: strawberry.ID, category: str,
        weight: float,
        at: Annotated[datetime | None, strawberry.argument(
            description="When the user said so (default: now).")] = None,
    ) -> Preference:
        if not -1.0 <= weight <= 1.0:
            raise InvalidInput(f"`weight` must be between -1 and 1, got {weight}")
        name = normalize_category(category)
        if not name:
            raise InvalidInput("`category` has no visible character")
        when = utc_or_none(at, "at") or datetime.now(UTC)
        user_id = strawberry.ID((await users.user(info.context.reader, user_id)).id)
        await asyncio.to_thread(info.context.writer.state_preferences,
                                [StatedPreference(user_id, name, weight, when)], source="graphql")
        token = await written(info.context.reader.driver)
        stored = Preference.from_model(
            await users.explicit_preference(info.context.reader, user_id, name))
        stored.consistency = token
        return stored

    @strawberry.mutation(
        description="Record that two users are one person: everything of `mergedId` moves to "
        "`survivorId` and the aggregates are rebuilt. Re-merging is a no-op.",
        extensions=allowed(ADMINS))
    async def merge_users(self, info: strawberry.Info[RequestContext, None],
                          survivor_id: strawberry.ID, merged_id: strawberry.ID,
                          reason: str = "merged through the API") -> Merge:
        graph = info.context.graph
        merge_id = await merge_users_async(graph, survivor_id, merged_id, source="api",
                                           reason=reason)
        history = await merges_of_async(graph, survivor_id)
        return Merge.from_dict(next(m for m in history if m["id"] == merge_id))

    @strawberry.mutation(
        description="Undo a merge: both users get back what they had. Merges into a user are "
        "undone latest first (an older one first is CONFLICT).", extensions=allowed(ADMINS))
    async def unmerge_user(self, info: strawberry.Info[RequestContext, None],
                           merge_id: strawberry.ID) -> Unmerge:
        survivor, merged = await unmerge_async(info.context.graph, merge_id)
        return Unmerge(survivor_id=strawberry.ID(survivor), restored_id=strawberry.ID(merged))

    @strawberry.mutation(
        description="Erase a user and everything derived from them (interactions, sessions, "
        "identifiers, memberships, preferences, dead letters). Idempotent.",
        extensions=allowed(ADMINS))
    async def forget_user(self, info: strawberry.Info[RequestContext, None],
                          user_id: strawberry.ID) -> Erasure:
        report = await asyncio.to_thread(forget_user, info.context.writer.graph, user_id,
                                         source="api")
        return Erasure.from_report(report)

    @strawberry.mutation(
        description="Everything held on a user, as one JSON document (identifiers as keyed "
        "hashes: no plaintext is held).", extensions=allowed(ADMINS))
    async def export_user(self, info: strawberry.Info[RequestContext, None],
                          user_id: strawberry.ID) -> JSON:
        exported = await asyncio.to_thread(export_user, info.context.writer.graph, user_id)
        return JSON(exported)

    @strawberry.mutation(
        description="Record a user's consent for a purpose (personalization or analytics); "
        "the newest statement by time wins.", extensions=allowed(WRITERS))
    async def set_consent(self, info: strawberry.Info[RequestContext, None], user_id: strawberry.ID,
                          purpose: str, granted: bool,
                          at: Annotated[datetime | None, strawberry.argument(
                              description="When the user said so (default: now).")] = None,
                          ) -> Consents:
        current = await set_consent_async(info.context.graph, user_id, purpose, granted,
                                          source="api", at=utc_or_none(at, "at"))
        return Consents(personalization=current["personalization"],
                        analytics=current["analytics"])

    @strawberry.mutation(
        description="Create or update a user's profile, found by any of its identifiers, "
        "through the same path as CRM records: per field, the newest value by `at` wins and "
        "its source is recorded; identifiers of two users merge them.",
        extensions=allowed(WRITERS))
    async def upsert_user(self, info: strawberry.Info[RequestContext, None],
                          profile: ProfileInput) -> UpsertUserResult:
        record = parse_record(direct_mapping(API_SOURCE), profile.record(),
                              info.context.writer.pseudonymizer)
        result = await asyncio.to_thread(apply_records, info.context.writer.graph, [record],
                                         source=API_SOURCE, via="graphql")
        if result.refused:
            raise Conflict("not applied: the record names a user who was erased after its `at`")
        kind, digest = record.identifiers[0]
        found = await users.user_by_identifier(info.context.reader, kind, digest)
        if found is None:  # the record was applied just now: its user exists
            raise RuntimeError("the upserted user is missing")
        return UpsertUserResult(user_id=strawberry.ID(found.id), found=found,
                                created=result.users_created > 0,
                                fields_updated=result.updated_by_record[0],
                                merges=result.merges,
                                consistency=await written(info.context.reader.driver))
