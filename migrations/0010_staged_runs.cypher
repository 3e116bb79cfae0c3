// Segmentation runs are written in bounded transactions as a `:PendingRun` with
// `:PendingSegment` nodes, published in one step (labels become `:SegmentationRun` and
// `:Segment`); a run that fails is kept as a `:FailedRun` record (graph/segments/publish.py).
// Memberships are written by segment id, so pending segments need the same unique lookup as
// published ones.
CREATE CONSTRAINT pending_run_id IF NOT EXISTS FOR (n:PendingRun) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT pending_segment_id IF NOT EXISTS FOR (n:PendingSegment) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT failed_run_id IF NOT EXISTS FOR (n:FailedRun) REQUIRE n.id IS UNIQUE;
CREATE INDEX pending_run_heartbeat IF NOT EXISTS FOR (n:PendingRun) ON (n.heartbeat_at);
