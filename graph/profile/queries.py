"""Cypher of the read model: a user, their persona, preferences, situation and activity, and the
personas, segments, runs and catalogue around them. Named constants, fixed text; every value
travels as a parameter (see the builders in ``graph.profile``)."""

from __future__ import annotations

# The latest run is the segmentation job's notion; the API asks the same question.
from graph.recommend.queries import RECOMMEND_FOR_USER
from graph.segments.queries import LATEST_RUN as LATEST_RUN

_USER_FIELDS = """
RETURN u.id AS id, u.first_seen AS first_seen, u.last_seen AS last_seen,
       u.age_band AS age_band, u.gender AS gender, u.locale AS locale,
       u.events AS events, u.purchases AS purchases, u.spend AS spend,
       u.consent_personalization AS consent_personalization,
       u.consent_analytics AS consent_analytics
"""

# A merged-away user's id still finds the person: the user it was merged into (in chains, the
# last survivor).
_USER_BY_ID = """
CALL () {
  MATCH (u:User {id: $id}) RETURN u
  UNION
  MATCH (:MergedUser {id: $id})-[:MERGED_INTO*1..]->(u:User) RETURN u
}
"""
USER = _USER_BY_ID + _USER_FIELDS

# Identifiers are stored as keyed hashes only: the caller's value is hashed the same way first.
_USER_BY_IDENTIFIER = """
MATCH (:Identifier {kind: $kind, hash: $hash})-[:IDENTIFIES]->(u:User)
"""
USER_BY_IDENTIFIER = _USER_BY_IDENTIFIER + _USER_FIELDS

_SEGMENT_FIELDS = ("s {.id, .label, .description, .why, .size, .level, .run_id, .median_distance, "
                   ".stability}")

# A user `u`'s newest segment membership (`m`, to its segment `s`): an ordered seek of the
# index on the memberships' (user_id, assigned_at) (migrations/0017), one entry whatever the
# number of runs the user was in (a pending run's membership, newer, is passed over). The
# order names `m.user_id` (one value) for the planner to see the index's order.
_LATEST_MEMBERSHIP = """
CALL (u) {
  MATCH (owner)-[m:IN_SEGMENT]->(s:Segment)
  USING INDEX SEEK m:IN_SEGMENT(user_id, assigned_at)
  WHERE m.user_id = u.id AND owner = u AND m.assigned_at IS NOT NULL
  WITH m, s ORDER BY m.user_id DESC, m.assigned_at DESC LIMIT 1
  RETURN m, s
}
"""

# The persona of a user `u`: the leaf segment of the latest run that includes them. The
# `*_OF_USER` bodies serve both the batched queries below and USER_PROFILE.
PERSONA_OF_USER = _LATEST_MEMBERSHIP + """MATCH (s)-[:EMBODIES]->(p:Persona)
RETURN p {.id, .name, .description} AS persona, """ + _SEGMENT_FIELDS + """ AS segment,
       m.distance AS distance
"""

# Batched per request (DataLoaders): one round trip answers every user the request names.
USERS_PERSONA = """
UNWIND $ids AS id
MATCH (u:User {id: id})
CALL (u) {""" + PERSONA_OF_USER + """}
RETURN id, persona, segment, distance
"""

# A user's persona periods are read from the index on their (user_id, valid_from)
# (migrations/0017), newest first: `_periods_of_user` returns (`h`, `p`) the $limit newest
# periods of the user `u` whose start passes `start` and that pass `where`, from an ordered
# seek (the history writer keeps one period open, the newest, and closes it when the next one
# opens), ties on the start broken by persona id when `ties` (a page's order). A single period
# does without: with the tie-break, or with a condition the planner splits into a union of
# seeks (an OR on `h.valid_to`), this planner reads the seek unordered and sorts all of it.
def _periods_of_user(start: str, where: str, limit: str, ties: bool = False) -> str:
    tie = ", p.id DESC" if ties else ""
    return f"""CALL (u) {{
  MATCH (owner)-[h:HAD_PERSONA]->(p:Persona)
  USING INDEX SEEK h:HAD_PERSONA(user_id, valid_from)
  WHERE h.user_id = u.id AND owner = u AND {start}
    AND ({where})
  WITH h, p ORDER BY h.user_id DESC, h.valid_from DESC{tie} LIMIT {limit}
  RETURN h, p
}}
"""


_NEVER = "datetime('9999-12-31T23:59:59Z')"
"""The end of an open period."""


# The persona the user had at $as_of (persona history), with the segment of that run: the
# newest period started by then, if not closed by then, and the user's membership of the
# period's run, found from the period's start on (the run's memberships are written after the
# time its history takes as its start; the hour allows for a clock between the two) in the
# membership index of PERSONA_OF_USER.
USER_PERSONA_AS_OF = """
MATCH (u:User {id: $id})
""" + _periods_of_user("h.valid_from <= $as_of", f"coalesce(h.valid_to, {_NEVER}) > $as_of",
                       "1") + """
CALL (u, h) {
  OPTIONAL MATCH (owner)-[m:IN_SEGMENT]->(s:Segment)
  USING INDEX SEEK m:IN_SEGMENT(user_id, assigned_at)
  WHERE m.user_id = u.id AND owner = u AND m.assigned_at >= h.valid_from - duration('PT1H')
    AND m.run_id = h.run_id
  WITH m, s ORDER BY m.user_id, m.assigned_at LIMIT 1
  RETURN m, s
}
RETURN p {.id, .name, .description} AS persona, """ + _SEGMENT_FIELDS + """ AS segment,
       m.distance AS distance, h.run_id AS run_id
"""

# Each user's leaf segment of the latest run that includes them, then each parent up to the root.
USERS_SEGMENT_PATH = """
UNWIND $ids AS id
MATCH (u:User {id: id})""" + _LATEST_MEMBERSHIP + """WITH id, s AS leaf
MATCH path = (leaf)-[:CHILD_OF*0..]->(s:Segment)
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
OPTIONAL MATCH (s)-[:CHILD_OF]->(parent:Segment)
WITH id, length(path) AS depth, """ + _SEGMENT_FIELDS + """ AS segment,
     p {.id, .name, .description} AS persona, parent.id AS parent_id
ORDER BY id, depth
RETURN id, collect({segment: segment, persona: persona, parent_id: parent_id}) AS path
"""

# A page of users in id order after the cursor, optionally of one persona (latest run, found
# once per page) or segment, or last seen after a time. It examines at most $scan users after
# the cursor (an ordered seek on the id constraint's index), so a filter few users pass costs
# $scan, not the whole population: the page may then hold fewer users than asked, and
# `last_scanned` is where the next one goes on. One row more than the page tells whether more
# follow; with no user passing, one row of nulls carries `last_scanned`.
USERS_PAGE = """
MATCH (u:User)
WHERE u.id > $after
WITH u ORDER BY u.id LIMIT $scan
WITH collect(u) AS scanned
OPTIONAL MATCH (r:SegmentationRun)
WITH scanned, r ORDER BY r.created_at DESC LIMIT 1
WITH size(scanned) AS scanned, last(scanned).id AS last_scanned, [u IN scanned WHERE
      ($last_seen_after IS NULL OR u.last_seen > $last_seen_after)
  AND ($segment_id IS NULL OR EXISTS { (u)-[:IN_SEGMENT]->(:Segment {id: $segment_id}) })
  AND ($persona_id IS NULL OR EXISTS {
        (u)-[:IN_SEGMENT {run_id: r.id}]->(:Segment)-[:EMBODIES]->(:Persona {id: $persona_id})
      })][..$limit] AS passed
UNWIND CASE WHEN passed = [] THEN [null] ELSE passed END AS u
""" + _USER_FIELDS + ", scanned, last_scanned"

# The user's current persona period (the open history entry, the newest).
CURRENT_PERSONA_PERIOD = """
MATCH (u:User {id: $id})
""" + _periods_of_user("h.valid_from IS NOT NULL", "h.valid_to IS NULL", "1") + """
RETURN p {.id, .name, .description} AS persona, h.valid_from AS valid_from, h.run_id AS run_id
"""

# A page of the user's persona periods, newest first, from the cursor's time ($upper: the
# cursor's, or the end of time on the first page) on: a page reads its own entries (and the
# ties of its last start), not the history before it.
PERSONA_HISTORY = """
MATCH (u:User {id: $id})
""" + _periods_of_user("h.valid_from <= $upper", """$after_at IS NULL
         OR h.valid_from < datetime({epochMillis: $after_at})
         OR (h.valid_from = datetime({epochMillis: $after_at}) AND p.id < $after_id)""",
                       "$limit", ties=True) + """
RETURN p {.id, .name, .description} AS persona, h.valid_from AS valid_from,
       h.valid_to AS valid_to, h.run_id AS run_id, h.valid_from.epochMillis AS at_ms
ORDER BY h.valid_from DESC, p.id DESC
"""

# Users who interacted with the same items, by Jaccard overlap of their item sets. Bounded
# whatever the graph: the user's $recent_items latest items, and only items with at most
# $max_item_users users (graph/recommend/limits.py: an item everyone bought says nothing about
# whose taste is alike, and expanding its users is what costs). The latest items are an
# ordered seek of the index on the aggregates' owner id and last time (migrations/0016), read
# newest first until $recent_items pass: not a walk of every item the user ever touched, and
# the same for a user whose interactions retention pruned (their aggregates stay). The order
# names both of the index's properties (the owner's is one value): with the time alone, the
# planner sorts every aggregate of the user instead.
SIMILAR_USERS = """
MATCH (u:User {id: $id})
CALL (u) {
  MATCH ()-[r:INTERACTED]->(it:Item)
  USING INDEX SEEK r:INTERACTED(user_id, last_at)
  WHERE r.user_id = u.id AND r.last_at IS NOT NULL
    AND COUNT { (it)<-[:INTERACTED]-() } <= $max_item_users
  RETURN it ORDER BY r.user_id DESC, r.last_at DESC LIMIT $recent_items
}
MATCH (it)<-[:INTERACTED]-(other:User)
WHERE other <> u
WITH u, other, count(it) AS shared
WITH other, shared,
     toFloat(shared) / (COUNT { (u)-[:INTERACTED]->() } + COUNT { (other)-[:INTERACTED]->() }
                        - shared) AS similarity
ORDER BY similarity DESC, other.id
LIMIT $first
RETURN other.id AS id, shared, similarity
"""

# Where the user is and what is going on there at $now (ISO 8601 text of a UTC instant, made a
# datetime once here; see ``graph.recommend.engine.now_param``): the latest weather observation
# still valid at $now (its valid_until, else at + $valid_hours; none looks back more than
# $lookback_hours), and local events starting in the next $days days. Both are ordered seeks
# of the indexes on the location's id and time (migrations/0015): the observations read are
# those of the look-back window, newest first, until one is still valid.
SITUATION_OF_USER = """
MATCH (u)-[:LOCATED_IN]->(l:Location)
WITH l, datetime($now) AS now
CALL (l, now) {
  OPTIONAL MATCH (w:WeatherObservation)
  USING INDEX SEEK w:WeatherObservation(location_id, at)
  WHERE w.location_id = l.id AND now - duration({hours: $lookback_hours}) < w.at <= now
    AND now < coalesce(w.valid_until, w.at + duration({hours: $valid_hours}))
  WITH w ORDER BY w.location_id DESC, w.at DESC LIMIT 1
  RETURN w {.id, .at, .temp_c, .condition, .valid_until} AS weather
}
CALL (l, now) {
  OPTIONAL MATCH (e:LocalEvent)
  USING INDEX SEEK e:LocalEvent(location_id, starts_at)
  WHERE e.location_id = l.id AND now <= e.starts_at < now + duration({days: $days})
  WITH e ORDER BY e.location_id, e.starts_at LIMIT $events_first
  RETURN collect(e {.id, .name, .starts_at, .ends_at}) AS events
}
RETURN l {.id, .city, .country, .lat, .lon} AS location, weather, events
"""

SITUATION = "MATCH (u:User {id: $id})\n" + SITUATION_OF_USER

# A user's interactions are read from the index on (user_id, at) (migrations/0015), newest
# first: `_NEWEST_OF_USER` hands out the user's $scan newest interactions at or before $before
# (and not before $since) from an ordered seek, whatever the length of the history. The order
# names `i.user_id` (one value) for the planner to see the index's order.
def _newest_of_user(before: str, since: str = "$since", scan: str = "$scan") -> str:
    return f"""CALL () {{
  MATCH (i:Interaction)
  USING INDEX SEEK i:Interaction(user_id, at)
  WHERE i.user_id = $id AND {since} <= i.at <= {before}
  WITH i ORDER BY i.user_id DESC, i.at DESC, i.event_id DESC LIMIT {scan}
  RETURN i
}}
"""


# The earliest time an interaction can have (the `since` of a read without one).
_EVER = "datetime('0001-01-01T00:00:00Z')"

# What the user did lately: searches, chat intents and categories, newest first, as known at
# $until (events recorded later are left out, whatever their own time), among the user's $scan
# newest interactions in the window.
RECENT_INTENT = _newest_of_user("$until") + """WITH i
WHERE coalesce(i.recorded_at, i.at) <= $until
  AND i.type IN ['search', 'chat_message', 'add_to_cart', 'page_view']
RETURN i.type AS type, i.query AS query, i.intent AS intent, i.category AS category,
       i.event_id AS event_id, i.at AS at
ORDER BY i.at DESC, i.event_id DESC
LIMIT $first
"""

# Where a chat context's lines come from: the run behind the persona, the newest event behind
# each preference (its feedback for an explicit one, else the newest interaction in the
# category) and how many there are among the user's $scan newest interactions, when the user's
# location was last set, and when the weather and local event shown were recorded. Everything
# as known at $until.
CHAT_EVIDENCE = """
MATCH (u:User {id: $id})
CALL () {
  OPTIONAL MATCH (r:SegmentationRun {id: $run_id})
  RETURN r.created_at AS run_at
}
CALL (u) {
  UNWIND $preferences AS p
  CALL (p) {
    CALL (p) {
      MATCH (i:Interaction)
      USING INDEX SEEK i:Interaction(user_id, at)
      WHERE i.user_id = $id AND i.at <= p.until
      WITH i ORDER BY i.user_id DESC, i.at DESC, i.event_id DESC LIMIT $scan
      RETURN i
    }
    WITH p, i
    WHERE i.category = p.category AND coalesce(i.recorded_at, i.at) <= $until
      AND (p.source <> 'explicit' OR i.type = 'feedback')
    WITH i ORDER BY i.at DESC, i.event_id DESC
    RETURN count(i) AS n, head(collect(i {.event_id, .at})) AS last
  }
  RETURN collect({category: p.category, n: n, last: last}) AS preferences
}
CALL (u) {
  OPTIONAL MATCH (u)-[r:LOCATED_IN]->(:Location {id: $location_id})
  RETURN r.at AS located_at
}
CALL () {
  OPTIONAL MATCH (w:WeatherObservation {id: $weather_id})
  RETURN coalesce(w.recorded_at, w.at) AS weather_recorded_at
}
CALL () {
  UNWIND $event_ids AS event_id
  MATCH (e:LocalEvent {id: event_id})
  RETURN collect({id: e.id, recorded_at: e.recorded_at}) AS events
}
RETURN run_at, preferences, located_at, weather_recorded_at, events
"""

_PERSONA_OF_LATEST_RUN = """
MATCH (r:SegmentationRun)
WITH r ORDER BY r.created_at DESC LIMIT 1
MATCH (r)-[:PRODUCED]->(s:Segment {level: 0})-[:EMBODIES]->(p:Persona)
"""

PERSONAS = _PERSONA_OF_LATEST_RUN + """
RETURN p {.id, .name, .description} AS persona, s.id AS segment_id, s.size AS size
ORDER BY size DESC, p.id
"""

# A persona by id, with its segment in the latest run (none if that run did not find it).
PERSONA = """
MATCH (p:Persona {id: $id})
OPTIONAL MATCH (r:SegmentationRun)
WITH p, r ORDER BY r.created_at DESC LIMIT 1
OPTIONAL MATCH (r)-[:PRODUCED]->(s:Segment {level: 0})-[:EMBODIES]->(p)
RETURN p {.id, .name, .description} AS persona, s.id AS segment_id, coalesce(s.size, 0) AS size
"""

# Most typical members first (nearest the segment centre); the cursor is (distance, id), from
# -Infinity and "" on the first page. The index on (segment_id, distance) (migrations/0014)
# seeks to the cursor and hands memberships out in distance order, so a page reads its own rows
# and the ties of its last distance, not the whole segment; the order names `m.segment_id`
# (one value) for the planner to see the index's order (PartialTop on the ids of a tie).
PERSONA_MEMBERS = """
MATCH (u:User)-[m:IN_SEGMENT]->(:Segment)
USING INDEX SEEK m:IN_SEGMENT(segment_id, distance)
WHERE m.segment_id = $segment_id AND m.distance >= $after_distance
  AND (m.distance > $after_distance OR u.id > $after_id)
WITH u, m ORDER BY m.segment_id, m.distance, u.id LIMIT $limit
""" + _USER_FIELDS + ", m.distance AS distance"

# A persona card's top categories and items, as written with its run
# (graph/segments/queries.py: WRITE_SEGMENT_TOPS): a bounded read however large the segment.
PERSONA_TOP_CATEGORIES = """
MATCH (s:Segment {id: $segment_id})
RETURN s.tops_written IS NOT NULL AS written, COLLECT {
  MATCH (s)-[t:TOP_CATEGORY]->(c:Category)
  WITH t, c ORDER BY t.rank LIMIT $first
  RETURN {category: c.name, weight: t.weight}
} AS tops
"""

PERSONA_TOP_ITEMS = """
MATCH (s:Segment {id: $segment_id})
RETURN s.tops_written IS NOT NULL AS written, COLLECT {
  MATCH (s)-[t:TOP_ITEM]->(it:Item)
  WITH t, it ORDER BY t.rank LIMIT $first
  OPTIONAL MATCH (it)-[:IN_CATEGORY]->(c:Category)
  RETURN {id: it.id, name: it.name, category: c.name, purchases: t.purchases,
          users: t.users}
} AS tops
"""

# The same two, aggregated at read time, for runs written before runs carried their tops: over
# the segment's $sample members nearest its centre (an ordered seek of the index on
# (segment_id, distance), migrations/0014), so that a read costs the sample, not the segment.
# A segment no larger than the sample is aggregated whole (weights: shares of its size).
_SAMPLE_OF_SEGMENT = """
MATCH (s:Segment {id: $segment_id})
CALL (s) {
  MATCH (member:User)-[m:IN_SEGMENT]->(:Segment)
  USING INDEX SEEK m:IN_SEGMENT(segment_id, distance)
  WHERE m.segment_id = $segment_id AND m.distance > -1.0
  WITH member ORDER BY m.segment_id, m.distance LIMIT $sample
  RETURN collect(member) AS members
}
WITH s, members, CASE WHEN size(members) < $sample THEN s.size ELSE size(members) END AS n
UNWIND members AS u
"""

LIVE_PERSONA_TOP_CATEGORIES = _SAMPLE_OF_SEGMENT + """
MATCH (u)-[pr:PREFERS {source: 'inferred'}]->(c:Category)
WITH n, c, sum(pr.weight) AS total
RETURN c.name AS category, total / n AS weight
ORDER BY weight DESC, category
LIMIT $first
"""

# Each sampled member counts with their $per_member latest aggregates (an ordered seek of the
# index on the aggregates' owner id and last time, migrations/0016, as SIMILAR_USERS): a
# member with a longer history than that costs the same, and a segment's read at most
# $sample x $per_member aggregates; members with fewer aggregates count whole, as before.
LIVE_PERSONA_TOP_ITEMS = _SAMPLE_OF_SEGMENT + """
CALL (u) {
  MATCH ()-[r:INTERACTED]->(it:Item)
  USING INDEX SEEK r:INTERACTED(user_id, last_at)
  WHERE r.user_id = u.id AND r.last_at IS NOT NULL
  RETURN r, it ORDER BY r.user_id DESC, r.last_at DESC LIMIT $per_member
}
WITH it, sum(r.purchases) AS purchases, count(u) AS users
OPTIONAL MATCH (it)-[:IN_CATEGORY]->(c:Category)
RETURN it.id AS id, it.name AS name, c.name AS category, purchases, users
ORDER BY purchases DESC, users DESC, id
LIMIT $first
"""

SEGMENTATION_RUNS = """
MATCH (r:SegmentationRun)
WHERE $after_at IS NULL OR r.created_at < datetime({epochMillis: $after_at})
      OR (r.created_at = datetime({epochMillis: $after_at}) AND r.id < $after_id)
RETURN r {.id, .created_at, .algorithm, .k, .n_users, .silhouette, .k_reason,
          .ari_vs_previous, .users_moved, .new_personas, .features, .code_version,
          .stability_ari, .clear_structure, .warnings, .topics} AS run,
       r.created_at.epochMillis AS at_ms
ORDER BY r.created_at DESC, r.id DESC
LIMIT $limit
"""

# The user's leaf segment in the latest run that includes them.
SEGMENTS_OF_RUN = """
MATCH (r:SegmentationRun {id: $run_id})-[:PRODUCED]->(s:Segment)
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
OPTIONAL MATCH (s)-[:CHILD_OF]->(parent:Segment)
RETURN s {.id, .label, .description, .why, .size, .level, .run_id} AS segment,
       p {.id, .name, .description} AS persona, parent.id AS parent_id
ORDER BY s.level DESC, s.size DESC
"""

SEGMENT = """
MATCH (s:Segment {id: $id})
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
OPTIONAL MATCH (s)-[:CHILD_OF]->(parent:Segment)
RETURN s {.id, .label, .description, .why, .size, .level, .run_id} AS segment,
       p {.id, .name, .description} AS persona, parent.id AS parent_id
"""

# A user's first $preferences_first preferences, explicit ones first (one row, maybe empty).
PREFERENCES_OF_USER = """
OPTIONAL MATCH (u)-[p:PREFERS]->(c:Category)
WITH p, c
ORDER BY CASE p.source WHEN 'explicit' THEN 0 ELSE 1 END, p.weight DESC, c.name
RETURN collect(CASE WHEN p IS NOT NULL THEN {category: c.name, weight: p.weight,
                    source: p.source, updated_at: p.updated_at} END)[..$preferences_first]
       AS prefs
"""

USERS_PREFERENCES = """
UNWIND $ids AS id
MATCH (u:User {id: id})
CALL (u) {""" + PREFERENCES_OF_USER + """}
RETURN id, prefs
"""

# Preferences at a point in time, rebuilt from the interactions before it (see ingestion's
# rules): the last feedback per category, and each category's share of interest. Both read the
# user's $max_interactions newest interactions at or before $as_of (an ordered seek of the
# index on (user_id, at), migrations/0015: a bounded read whatever the history), and the
# inferred shares only those within $horizon_ms of the newest: older interest has decayed
# below what a share can show (users.py).
EXPLICIT_PREFERENCES_AS_OF = _newest_of_user("$as_of", _EVER, "$max_interactions") + """WITH i
WHERE i.type = 'feedback' AND coalesce(i.recorded_at, i.at) <= $as_of
  AND i.category IS NOT NULL AND i.rating IS NOT NULL
WITH i ORDER BY i.at DESC, i.event_id DESC
WITH i.category AS category, head(collect(i)) AS last
RETURN category, (last.rating - 3) / 2.0 AS weight, last.at AS updated_at
ORDER BY weight DESC, category
"""

# The same weights ingestion keeps (graph/ingest/queries.py): interest per category, decayed
# to the user's latest categorized interaction before $as_of, as shares of the total.
INFERRED_PREFERENCES_AS_OF = _newest_of_user("$as_of", _EVER, "$max_interactions") + """WITH i
WHERE coalesce(i.recorded_at, i.at) <= $as_of AND i.category IS NOT NULL
WITH i ORDER BY i.at DESC, i.event_id DESC
WITH collect(i) AS its
WITH its, its[0].at.epochMillis AS ref
UNWIND its AS i
WITH ref, i WHERE ref - i.at.epochMillis <= $horizon_ms
WITH i.category AS category, max(i.at) AS updated_at,
     sum($scores[i.type] * exp(-$decay_per_ms * (ref - i.at.epochMillis))) AS score
WITH collect({category: category, score: score, updated_at: updated_at}) AS rows,
     sum(score) AS total
UNWIND rows AS r
RETURN r.category AS category, r.score / total AS weight, r.updated_at AS updated_at
ORDER BY weight DESC, category
"""

RECENT_INTERACTIONS = """
MATCH (i:Interaction)
USING INDEX SEEK i:Interaction(user_id, at)
WHERE i.user_id = $id AND i.at IS NOT NULL
WITH i ORDER BY i.user_id DESC, i.at DESC LIMIT $first
RETURN i {.event_id, .type, .at, .item_id, .category, .amount, .query, .text, .intent,
          .rating} AS interaction
ORDER BY interaction.at DESC
"""

# The user's location and its latest observation (an ordered seek, as in SITUATION_OF_USER).
LOCATION = """
MATCH (:User {id: $id})-[:LOCATED_IN]->(l:Location)
CALL (l) {
  OPTIONAL MATCH (w:WeatherObservation)
  USING INDEX SEEK w:WeatherObservation(location_id, at)
  WHERE w.location_id = l.id AND w.at <= datetime()
  WITH w ORDER BY w.location_id DESC, w.at DESC LIMIT 1
  RETURN w
}
RETURN l {.id, .city, .country, .lat, .lon} AS location,
       w {.at, .temp_c, .condition, .valid_until} AS weather
"""

UPCOMING_EVENTS = """
MATCH (e:LocalEvent)
USING INDEX SEEK e:LocalEvent(location_id, starts_at)
WHERE e.location_id = $location_id AND e.starts_at >= datetime()
WITH e ORDER BY e.location_id, e.starts_at LIMIT $first
RETURN e {.id, .name, .starts_at, .ends_at} AS event
ORDER BY event.starts_at
"""

READY = "MATCH (m:Migration) RETURN max(m.version) AS version"

# Cursor pages over time-ordered lists: ($after_at, $after_id) is the last row of the previous
# page (epoch milliseconds, id), null on the first page; ties on time are broken by id. The
# interactions of a user (or a session) are an ordered seek of the index on (user_id, at) (or
# (session_id, at)) between $lower and $upper, the time range the filters and the cursor leave
# (inclusive, never null: users.py), so a page reads its own rows, not the history before it.
# With a $types filter (`USER_TYPED_*`, listing each type once) each type is an ordered seek of
# the index on (user_id, type, at) (migrations/0017) ended by the page's limit, and the page is
# the first of those rows: at most the page size per type, whatever the other types hold.
_INTERACTION_FIELDS = """i {.event_id, .type, .at, .item_id, .category, .amount, .query, .text,
         .intent, .rating} AS interaction, i.at.epochMillis AS at_ms"""

USER_INTERACTIONS_NEWEST = """
MATCH (i:Interaction)
USING INDEX SEEK i:Interaction(user_id, at)
WHERE i.user_id = $id AND $lower <= i.at <= $upper
  AND ($since IS NULL OR i.at >= $since) AND ($until IS NULL OR i.at < $until)
  AND ($after_at IS NULL OR i.at < datetime({epochMillis: $after_at})
       OR (i.at = datetime({epochMillis: $after_at}) AND i.event_id < $after_id))
WITH i ORDER BY i.user_id DESC, i.at DESC, i.event_id DESC LIMIT $limit
RETURN """ + _INTERACTION_FIELDS + """
ORDER BY i.at DESC, i.event_id DESC
"""

USER_INTERACTIONS_OLDEST = """
MATCH (i:Interaction)
USING INDEX SEEK i:Interaction(user_id, at)
WHERE i.user_id = $id AND $lower <= i.at <= $upper
  AND ($since IS NULL OR i.at >= $since) AND ($until IS NULL OR i.at < $until)
  AND ($after_at IS NULL OR i.at > datetime({epochMillis: $after_at})
       OR (i.at = datetime({epochMillis: $after_at}) AND i.event_id > $after_id))
WITH i ORDER BY i.user_id, i.at, i.event_id LIMIT $limit
RETURN """ + _INTERACTION_FIELDS + """
ORDER BY i.at, i.event_id
"""

def _typed(after: str, order: str) -> str:
    """A page of the user's interactions of $types: each type's rows from its own seek."""
    return f"""
UNWIND $types AS type
CALL (type) {{
  MATCH (i:Interaction)
  USING INDEX SEEK i:Interaction(user_id, type, at)
  WHERE i.user_id = $id AND i.type = type AND $lower <= i.at <= $upper
    AND ($since IS NULL OR i.at >= $since) AND ($until IS NULL OR i.at < $until)
    AND ($after_at IS NULL OR i.at {after} datetime({{epochMillis: $after_at}})
         OR (i.at = datetime({{epochMillis: $after_at}}) AND i.event_id {after} $after_id))
  WITH i ORDER BY i.user_id {order}, i.type {order}, i.at {order}, i.event_id {order}
  LIMIT $limit
  RETURN i
}}
WITH i ORDER BY i.at {order}, i.event_id {order} LIMIT $limit
RETURN {_INTERACTION_FIELDS}
ORDER BY i.at {order}, i.event_id {order}
"""


USER_TYPED_NEWEST = _typed("<", "DESC")
USER_TYPED_OLDEST = _typed(">", "ASC")

# A user's sessions: a seek of the index on their links' (user_id, started_at) (the writer keeps
# the session's start on each link, migrations/0015), newest first from $upper.
USER_SESSIONS = """
MATCH (:User)-[h:HAD_SESSION]->(s:Session)
USING INDEX SEEK h:HAD_SESSION(user_id, started_at)
WHERE h.user_id = $id AND h.started_at <= $upper
  AND ($after_at IS NULL OR h.started_at < datetime({epochMillis: $after_at})
       OR (h.started_at = datetime({epochMillis: $after_at}) AND s.id < $after_id))
WITH h, s ORDER BY h.user_id DESC, h.started_at DESC, s.id DESC LIMIT $limit
RETURN s {.id, .started_at, .ended_at, .events, .channel, .device_kind} AS session,
       s.started_at.epochMillis AS at_ms
ORDER BY s.started_at DESC, s.id DESC
"""

SESSION_INTERACTIONS = """
MATCH (i:Interaction)
USING INDEX SEEK i:Interaction(session_id, at)
WHERE i.session_id = $id AND $lower <= i.at <= $upper
  AND ($after_at IS NULL OR i.at > datetime({epochMillis: $after_at})
       OR (i.at = datetime({epochMillis: $after_at}) AND i.event_id > $after_id))
WITH i ORDER BY i.session_id, i.at, i.event_id LIMIT $limit
RETURN """ + _INTERACTION_FIELDS + """
ORDER BY i.at, i.event_id
"""

# Identifiers are held only as keyed hashes; the API shows a short prefix of the hash.
USER_IDENTIFIERS = """
MATCH (i:Identifier)-[:IDENTIFIES]->(:User {id: $id})
RETURN i.kind AS kind, i.hash AS hash, i.first_seen AS first_seen
ORDER BY kind, hash
"""

# A page of items in id order, optionally of one category, examining at most $scan items
# after the cursor (as USERS_PAGE does, and with the same `scanned` and `last_scanned`).
ITEMS_PAGE = """
MATCH (it:Item)
WHERE it.id > $after
WITH it ORDER BY it.id LIMIT $scan
WITH collect(it) AS scanned
WITH size(scanned) AS scanned, last(scanned).id AS last_scanned, [it IN scanned WHERE
      $category IS NULL OR EXISTS { (it)-[:IN_CATEGORY]->(:Category {name: $category}) }
     ][..$limit] AS passed
UNWIND CASE WHEN passed = [] THEN [null] ELSE passed END AS it
OPTIONAL MATCH (it)-[:IN_CATEGORY]->(c:Category)
OPTIONAL MATCH (it)-[:OF_BRAND]->(b:Brand)
RETURN it.id AS id, it.name AS name, it.price AS price, c.name AS category, b.name AS brand,
       coalesce(it.buyers, 0) AS buyers,
       scanned, last_scanned
ORDER BY id
"""

# An item's buyers are its counter (graph/aggregates/queries.py), not a count of them per read.
ITEM = """
MATCH (it:Item {id: $id})
OPTIONAL MATCH (it)-[:IN_CATEGORY]->(c:Category)
OPTIONAL MATCH (it)-[:OF_BRAND]->(b:Brand)
RETURN it.id AS id, it.name AS name, it.price AS price, c.name AS category, b.name AS brand,
       coalesce(it.buyers, 0) AS buyers
"""

CATEGORIES = """
MATCH (c:Category)
RETURN c.name AS name, COUNT { (:Item)-[:IN_CATEGORY]->(c) } AS items
ORDER BY name
"""

EXPLICIT_PREFERENCE = """
MATCH (:User {id: $id})-[p:PREFERS {source: 'explicit'}]->(:Category {name: $category})
RETURN p.weight AS weight, p.updated_at AS updated_at
"""

SEGMENT_CHILDREN = """
MATCH (s:Segment)-[:CHILD_OF]->(:Segment {id: $id})
OPTIONAL MATCH (s)-[:EMBODIES]->(p:Persona)
RETURN s {.id, .label, .description, .why, .size, .level, .run_id} AS segment,
       p {.id, .name, .description} AS persona, $id AS parent_id
ORDER BY s.size DESC, s.id
"""


# What USER_PROFILE returns: the columns of _USER_FIELDS and of the parts' queries, with every
# time as text (`toString`), which the API parses itself (``graph.times.from_cypher_text``): the
# driver turns each temporal value it receives into Python in pure Python, a visible share of
# the API's CPU per chatbot request (docs/performance.md).
_PROFILE_FIELDS = """
RETURN u.id AS id, toString(u.first_seen) AS first_seen, toString(u.last_seen) AS last_seen,
       u.age_band AS age_band, u.gender AS gender, u.locale AS locale,
       u.events AS events, u.purchases AS purchases, u.spend AS spend,
       u.consent_personalization AS consent_personalization,
       u.consent_analytics AS consent_analytics,
       persona, segment, distance,
       [p IN prefs | p {.category, .weight, .source, updated_at: toString(p.updated_at)}]
         AS prefs,
       location,
       weather {.id, .temp_c, .condition, at: toString(weather.at),
                valid_until: toString(weather.valid_until)} AS weather,
       [e IN events | e {.id, .name, starts_at: toString(e.starts_at),
                         ends_at: toString(e.ends_at)}] AS upcoming_events,
       recommendations
"""

# One user with everything a chatbot asks of them, in one round trip (``prefetch``): each
# part only when $want names it, preferences and recommendations only with personalization
# consent. The parts take the parameters of the queries they come from.
_PROFILE = """
WITH u, coalesce(u.consent_personalization, true) AS personal
OPTIONAL CALL (u) {
  WITH u WHERE $want.persona""" + PERSONA_OF_USER + """}
CALL (u, personal) {
  WITH u WHERE $want.preferences AND personal""" + PREFERENCES_OF_USER + """}
OPTIONAL CALL (u) {
  WITH u WHERE $want.situation""" + SITUATION_OF_USER + """}
CALL (u, personal) {
  WITH u WHERE $want.recommendations AND personal
  CALL (u) {""" + RECOMMEND_FOR_USER + """}
  RETURN collect({item_id: item_id, name: name, category: category, score: score,
                  reasons: reasons}) AS recommendations
}
""" + _PROFILE_FIELDS

USER_PROFILE = _USER_BY_ID + _PROFILE
USER_PROFILE_BY_IDENTIFIER = _USER_BY_IDENTIFIER + _PROFILE

RUN_STATUS = """
CALL () { MATCH (r:SegmentationRun) RETURN count(r) AS complete }
CALL () { MATCH (f:FailedRun) RETURN count(f) AS failed }
CALL () {
  OPTIONAL MATCH (r:SegmentationRun)
  WITH r ORDER BY r.created_at DESC LIMIT 1
  RETURN r {.k, .n_users, .silhouette, .stability_ari, .ari_vs_previous, .users_moved,
            .new_personas, created_at_ms: r.created_at.epochMillis} AS latest
}
RETURN complete, failed, latest
"""
