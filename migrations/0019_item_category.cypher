// An item's category is a property of the item (`category`, the category's name), beside its
// IN_CATEGORY edge: the recommendation reads it for every candidate (graph/recommend/queries.py)
// instead of expanding IN_CATEGORY from a dense item node. Every writer keeps both in step, one
// category per item, the latest named (graph/ingest/queries.py UPSERT_ITEMS moves the edge when
// it changes; the bulk import writes both).
// Items written before then get it here, in bounded transactions: the category the reads saw
// (the first IN_CATEGORY edge an expansion meets), and the edges to any other category, which
// the transactional writer used to add beside the first when an item's category changed, are
// deleted, so that the edge and the property name one category. Items that have it are left
// alone, so running it again is a no-op.
MATCH (it:Item)
WHERE it.category IS NULL AND EXISTS { (it)-[:IN_CATEGORY]->(:Category) }
CALL (it) {
  WITH it, head([(it)-[:IN_CATEGORY]->(c:Category) | c]) AS kept
  OPTIONAL MATCH (it)-[other:IN_CATEGORY]->(c:Category) WHERE c <> kept
  DELETE other
  WITH DISTINCT it, kept
  SET it.category = kept.name
} IN TRANSACTIONS OF 1000 ROWS;
