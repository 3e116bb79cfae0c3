// A user's persona (the newest segment membership), persona history and persona at a time are
// read from an index seek (graph/profile/queries.py): each IN_SEGMENT membership and each
// HAD_PERSONA period carries its user's id (`user_id`, written by graph/segments/queries.py;
// both stay with a merged user's tombstone, whose id does not change), so that the newest
// membership or period is one entry of these indexes, not a sort of every run the user was in.
CREATE INDEX in_segment_user_assigned_at IF NOT EXISTS
FOR ()-[m:IN_SEGMENT]-() ON (m.user_id, m.assigned_at);
CREATE INDEX had_persona_user_valid_from IF NOT EXISTS
FOR ()-[h:HAD_PERSONA]-() ON (h.user_id, h.valid_from);
// Memberships and periods written before then get their user's id here, in bounded
// transactions; those that have it are left alone, so running it again is a no-op.
MATCH (u)-[m:IN_SEGMENT]->()
WHERE m.user_id IS NULL OR m.user_id <> u.id
CALL (u, m) { SET m.user_id = u.id } IN TRANSACTIONS OF 10000 ROWS;
MATCH (u)-[h:HAD_PERSONA]->()
WHERE h.user_id IS NULL OR h.user_id <> u.id
CALL (u, h) { SET h.user_id = u.id } IN TRANSACTIONS OF 10000 ROWS;
// A page of a user's interactions of some types seeks each type's entries of the user in time
// order, instead of passing over the other types in the page's time range (`user_id` and
// `type` are on every interaction already: 0015 and the writers).
CREATE INDEX interaction_user_type_at IF NOT EXISTS
FOR (n:Interaction) ON (n.user_id, n.type, n.at);
