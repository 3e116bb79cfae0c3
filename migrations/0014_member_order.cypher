// A persona's members are paged nearest the segment centre first (graph/profile/queries.py
// PERSONA_MEMBERS). Each membership carries its segment's id (`segment_id`, written by the run
// and by newcomer assignment, graph/segments/queries.py), so that this index hands a page out
// in distance order from a seek: a page costs its size, not the segment's.
CREATE INDEX in_segment_member_order IF NOT EXISTS
FOR ()-[m:IN_SEGMENT]-() ON (m.segment_id, m.distance);
// Memberships written before then get their segment's id here, in bounded transactions; those
// that have it are left alone, so running it again is a no-op.
MATCH (:User)-[m:IN_SEGMENT]->(s)
WHERE m.segment_id IS NULL
CALL (m, s) { SET m.segment_id = s.id } IN TRANSACTIONS OF 10000 ROWS;
