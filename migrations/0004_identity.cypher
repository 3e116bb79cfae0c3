// Identity resolution: merges are found by id (unmerge) and by either user (history); merge
// tombstones (users merged into another, label MergedUser) keep their id unique and are found
// by it, so that lookups by an old id can follow MERGED_INTO to the survivor.
CREATE CONSTRAINT merge_id IF NOT EXISTS FOR (n:Merge) REQUIRE n.id IS UNIQUE;
CREATE INDEX merge_survivor_id IF NOT EXISTS FOR (n:Merge) ON (n.survivor_id);
CREATE INDEX merge_merged_id IF NOT EXISTS FOR (n:Merge) ON (n.merged_id);
CREATE CONSTRAINT merged_user_id IF NOT EXISTS FOR (n:MergedUser) REQUIRE n.id IS UNIQUE;
