// Privacy: dead letters kept in the graph (found per user by their identifier pseudonyms, pruned
// by age), consent changes (history, idempotent on id) and erasure records.
CREATE CONSTRAINT dead_letter_id IF NOT EXISTS FOR (n:DeadLetter) REQUIRE n.id IS UNIQUE;
CREATE INDEX dead_letter_at IF NOT EXISTS FOR (n:DeadLetter) ON (n.at);
CREATE CONSTRAINT consent_id IF NOT EXISTS FOR (n:Consent) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT erasure_id IF NOT EXISTS FOR (n:Erasure) REQUIRE n.id IS UNIQUE;
