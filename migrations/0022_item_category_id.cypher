// A preferred category with fewer interacted-with items than the recommendation keeps adds its
// items nobody interacted with, by id (graph/recommend/queries.py, the preferred categories'
// items): an ordered seek of this index, stopped by the limit, instead of expanding up to
// 20,000 of the category's IN_CATEGORY edges and sorting them. The index on (category, users,
// id) of migrations/0020 cannot serve it: an item without `users` is not in it.
CREATE INDEX item_category_id IF NOT EXISTS FOR (n:Item) ON (n.category, n.id);
