"""Cypher that reads per-user feature inputs, a page of users per round trip.

``USERS_BY_ID`` runs with each ingested batch that brings newcomers, so it keeps its plan
(``CYPHER replan=skip``, see ``graph/ingest/queries.py``).
"""

from __future__ import annotations

CATEGORIES = "MATCH (c:Category) RETURN c.name AS name ORDER BY name"

# The reference time of a feature table: the latest activity of any segmented user. Recency is
# measured against it rather than against the clock, so the same data gives the same features
# (and the same run) whenever it is read.
LATEST_ACTIVITY = """
MATCH (u:User)
WHERE coalesce(u.consent_analytics, true)
RETURN max(u.last_seen) AS at
"""

# One row per user: counters kept on the user by ingestion, session statistics, purchase
# statistics and the category mix of their interactions. The users come from the statement
# that precedes this body (a page, or a list of ids). First and last seen are nanoseconds since
# the epoch: the features need only their differences, and the driver's hydration of two zoned
# datetimes per user was the largest part of the feature read's client CPU
# (docs/performance.md).
_USER_FEATURES = """
CALL (u) {
  OPTIONAL MATCH (u)-[:HAD_SESSION]->(s:Session)
  RETURN count(s) AS sessions,
         avg(duration.inSeconds(s.started_at, s.ended_at).seconds) AS avg_session_s,
         sum(CASE WHEN s.device_kind IN ['mobile', 'app'] THEN 1 ELSE 0 END) AS mobile_sessions,
         sum(CASE WHEN s.channel = 'app' THEN 1 ELSE 0 END) AS app_sessions,
         sum(CASE WHEN s.channel = 'chat' THEN 1 ELSE 0 END) AS chat_sessions
}
CALL (u) {
  OPTIONAL MATCH (u)-[p:PREFERS {source: 'explicit'}]->(:Category)
  RETURN avg(p.weight) AS explicit_preference
}
// One pass over the user's interactions for everything read from them (each pass cost about
// as much as the rest of the row): grouped by category and day, so a row grows with the
// user's categories, active days and purchases, not with their interactions. The weather of
// those days is looked up in Python (WEATHER_DAYS, read once per table): expanding each
// user's location's observations here cost every user the location's whole weather history,
// and a location shared by every user multiplied it by the population.
CALL (u) {
  OPTIONAL MATCH (u)-[:PERFORMED]->(i:Interaction)
  WITH i.category AS category, date(i.at) AS day,
       CASE WHEN i.type = 'purchase' THEN i END AS p
  WITH category, day, count(day) AS per_day,
       collect(CASE WHEN p IS NOT NULL THEN {order: coalesce(p.order_id, p.event_id),
                                            discount: coalesce(p.discount, 0.0),
                                            month: p.at.month} END) AS buys
  WITH category, sum(per_day) AS n,
       collect(CASE WHEN day IS NOT NULL THEN [day, per_day] END) AS days,
       reduce(acc = [], b IN collect(buys) | acc + b) AS buys
  WITH collect(CASE WHEN category IS NOT NULL THEN [category, n] END) AS category_counts,
       reduce(acc = [], d IN collect(days) | acc + d) AS day_counts,
       reduce(acc = [], b IN collect(buys) | acc + b) AS buys
  RETURN category_counts, day_counts,
         [b IN buys | b.month] AS purchase_months,
         size(reduce(seen = [], b IN buys |
                     CASE WHEN b.order IN seen THEN seen ELSE seen + b.order END)) AS orders,
         CASE WHEN size(buys) > 0
              THEN reduce(t = 0.0, b IN buys | t + b.discount) / size(buys) END AS avg_discount
}
RETURN u.id AS user_id,
       u.first_seen.epochSeconds * 1000000000 + u.first_seen.nanosecond AS first_seen_ns,
       u.last_seen.epochSeconds * 1000000000 + u.last_seen.nanosecond AS last_seen_ns,
       u.events AS events, u.page_views AS page_views, u.carts AS carts,
       u.purchases AS purchases, u.spend AS spend, u.chat_messages AS chat_messages,
       u.age_band AS age_band, u.demo_group AS demo_group,
       sessions, avg_session_s, mobile_sessions, app_sessions, chat_sessions,
       explicit_preference, [(u)-[:LOCATED_IN]->(l:Location) | l.id] AS locations,
       day_counts, orders, avg_discount, purchase_months, category_counts
ORDER BY u.id
"""

# The days with a weather observation at each location, and those of rain, snow or cold (below
# 5 °C), for the context feature bad_weather_share; all locations, or those of $ids.
WEATHER_DAYS = """
MATCH (l:Location)<-[:OBSERVED_AT]-(w:WeatherObservation)
WHERE $ids IS NULL OR l.id IN $ids
RETURN l.id AS location_id, collect(DISTINCT date(w.at)) AS known,
       collect(DISTINCT CASE WHEN w.condition IN ['rain', 'snow'] OR w.temp_c < 5
                             THEN date(w.at) END) AS bad
"""

# Users who withdrew analytics consent (`u.consent_analytics = false`, see graph/subjects)
# are left out of every feature table, and of the user-item graph below.
USER_PAGE = """
MATCH (u:User)
WHERE u.id > $after AND coalesce(u.consent_analytics, true)
WITH u ORDER BY u.id LIMIT $limit
""" + _USER_FEATURES

USERS_BY_ID = """
CYPHER replan=skip
UNWIND $ids AS id
MATCH (u:User {id: id})
WHERE coalesce(u.consent_analytics, true)
""" + _USER_FEATURES

# The user–item graph with interaction weights, for the structural features.
USER_ITEM_EDGES = """
MATCH (u:User)-[r:INTERACTED]->(it:Item)
WHERE coalesce(u.consent_analytics, true)
RETURN u.id AS user_id, it.id AS item_id,
       r.views + 3 * r.carts + 5 * r.purchases AS weight
"""

# The same edges a page of users at a time (keyset on the user id), so that a million users'
# ten million edges are never one result held at once: one row per user, its edges as a list of
# [item id, weight] (empty without any). A row per edge cost the driver most of the feature
# read's client CPU: a record per edge, each turned into a dict (docs/performance.md).
USER_ITEM_EDGE_PAGE = """
MATCH (u:User)
WHERE u.id > $after AND coalesce(u.consent_analytics, true)
WITH u ORDER BY u.id LIMIT $limit
RETURN u.id AS user_id,
       [(u)-[r:INTERACTED]->(it:Item) | [it.id, r.views + 3 * r.carts + 5 * r.purchases]]
         AS edges
"""

# Text features (graph/features/text.py). The population-wide counts decide whether the text
# families are used at all (TextRule); they start from the type index, so a population that
# mostly browses pays for its few texts, not for every interaction.
TEXT_COUNTS = """
CALL () {
  MATCH (u:User) WHERE coalesce(u.consent_analytics, true)
  RETURN count(u) AS users
}
CALL () {
  MATCH (u:User)-[:PERFORMED]->(i:Interaction)
  USING INDEX i:Interaction(type)
  WHERE i.type IN $types AND coalesce(i.text, i.query) IS NOT NULL
    AND coalesce(u.consent_analytics, true)
  WITH u, count(i) AS n
  RETURN sum(CASE WHEN n >= $min_texts THEN 1 ELSE 0 END) AS writers, sum(n) AS documents
}
RETURN users, writers, documents
"""

# Each user's latest $per_user texts (chat messages and searches) with their hour and session,
# newest first; a user without any gets an empty list. The users come from the statement that
# precedes this body, like _USER_FEATURES.
_USER_TEXTS = """
CALL (u) {
  MATCH (u)-[:PERFORMED]->(i:Interaction)
  WHERE i.type IN $types AND coalesce(i.text, i.query) IS NOT NULL
  WITH i ORDER BY i.at DESC LIMIT $per_user
  OPTIONAL MATCH (i)-[:IN_SESSION]->(s:Session)
  RETURN collect({type: i.type, text: coalesce(i.text, i.query), hour: i.at.hour,
                  session: s.id}) AS texts
}
RETURN u.id AS user_id, texts
ORDER BY u.id
"""

TEXT_PAGE = """
MATCH (u:User)
WHERE u.id > $after AND coalesce(u.consent_analytics, true)
WITH u ORDER BY u.id LIMIT $limit
""" + _USER_TEXTS

TEXTS_BY_ID = """
UNWIND $ids AS id
MATCH (u:User {id: id})
WHERE coalesce(u.consent_analytics, true)
""" + _USER_TEXTS

# The same two reads for the Neo4j Connector for Apache Spark (graph/segments/spark_engine.py):
# one statement over every consenting user that the connector splits into partitions itself (it
# appends SKIP/LIMIT, so the order is total). A Spark column holds one type, so the mixed
# [category, count] and [day, count] pairs of USER_PAGE travel as two typed lists each, put back
# together before the same feature code reads them.
SPARK_USER_ROWS = """
CALL () {
MATCH (u:User)
WHERE coalesce(u.consent_analytics, true)
WITH u ORDER BY u.id
""" + _USER_FEATURES + """
}
RETURN user_id, first_seen_ns, last_seen_ns, events, page_views, carts, purchases, spend,
       chat_messages, age_band, demo_group, sessions, avg_session_s, mobile_sessions,
       app_sessions, chat_sessions, explicit_preference, locations, orders, avg_discount,
       purchase_months,
       [c IN category_counts | c[0]] AS category_names,
       [c IN category_counts | c[1]] AS category_ns,
       [d IN day_counts | d[0]] AS days, [d IN day_counts | d[1]] AS day_ns
ORDER BY user_id
"""

SPARK_USER_COUNT = """
MATCH (u:User)
WHERE coalesce(u.consent_analytics, true)
RETURN count(u) AS count
"""

SPARK_USER_ITEM_EDGES = USER_ITEM_EDGES + "ORDER BY user_id, item_id\n"

SPARK_USER_ITEM_EDGE_COUNT = """
MATCH (u:User)-[:INTERACTED]->(:Item)
WHERE coalesce(u.consent_analytics, true)
RETURN count(*) AS count
"""
