// Segmentation runs write similar users (`SIMILAR_TO`) and item neighbours (`SIMILAR_ITEM`) in
// bounded transactions while unpublished, and remove another run's by its `run_id` (a failed
// run's, graph/segments) or keep only the published run's (graph/recommend/neighbours.py,
// items.py). These indexes find one run's edges without scanning every run's.
CREATE INDEX similar_to_run_id IF NOT EXISTS FOR ()-[s:SIMILAR_TO]-() ON (s.run_id);
CREATE INDEX similar_item_run_id IF NOT EXISTS FOR ()-[s:SIMILAR_ITEM]-() ON (s.run_id);
