// Segmentation runs now write each leaf segment's favourite items (`FAVOURITE`), which the
// recommender reads. The latest run of a graph segmented before this migration gets them here,
// by the rule the run applies (graph/segments/queries.py WRITE_SEGMENT_FAVOURITES, 100 typical
// members, 50 items), so recommendations keep their segment favourites until the next run.
// Segments that already have favourites are left as they are, so running it again is a no-op.
MATCH (run:SegmentationRun)
WITH run ORDER BY run.created_at DESC LIMIT 1
MATCH (run)-[:PRODUCED]->(s:Segment {level: 0})
WHERE NOT EXISTS { (s)-[:FAVOURITE]->() }
CALL (s) {
  MATCH (s)<-[m:IN_SEGMENT]-(member:User)
  WITH member ORDER BY m.distance, member.id LIMIT 100
  WITH collect(member) AS members
  UNWIND members AS member
  MATCH (member)-[r:INTERACTED]->(it:Item) WHERE r.purchases > 0
  WITH size(members) AS n, it, count(*) AS buyers
  ORDER BY buyers DESC, it.id LIMIT 50
  CREATE (s)-[:FAVOURITE {share: toFloat(buyers) / n, buyers: buyers}]->(it)
};
