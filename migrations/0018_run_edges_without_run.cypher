// A run drops the earlier runs' similar users (`SIMILAR_TO`) and item neighbours
// (`SIMILAR_ITEM`) by range seeks of their run_id indexes (0012; graph/recommend/queries.py),
// which do not see an edge without a run id. Every writer gives them one; any written before
// that (unread: readers take the latest published run's) are deleted here, in bounded
// transactions. Running it again finds none.
MATCH ()-[s:SIMILAR_TO]->()
WHERE s.run_id IS NULL
CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS;
MATCH ()-[s:SIMILAR_ITEM]->()
WHERE s.run_id IS NULL
CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS;
