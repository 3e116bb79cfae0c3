"""Bounds on what a recommendation, and the run that prepares it, may expand: super-nodes.

An item, category or location shared by every user (30,000 users who all bought the one item a
shop sells) would otherwise make every user "similar" to every other (a users x users overlap
matrix at run time, every buyer of the item expanded per request), and a 50,000-item category
would put all its items on every request's candidate list. Each constant here caps one such
fan-out; the run (Python, ``neighbours``, ``items``) and the request (Cypher, ``queries``, which
gets them as ``$limits`` from ``engine.recommend_params``) read the same numbers, so that who is
similar is the same whether the run stored it or a request finds it.

They are constants, not settings: the API builds its recommendation parameters without settings
(``engine.recommend_params``), and run and request must never disagree.
"""

from __future__ import annotations

# Inverse user frequency, in its simplest form: an item that more than this many users
# interacted with (any kind: ``COUNT { (it)<-[:INTERACTED]-() }``, a degree read, O(1)) says
# nothing about whose taste is alike, and expanding its users is what costs. Such items make
# nobody similar (neither at run time nor per request) but stay recommendable. 1,000 keeps a
# request's fallback to 10 items x 1,000 users at most, and keeps every item of the demo
# populations (about 400 users each at 2,000 users) as evidence.
MAX_ITEM_USERS = 1000

# Similar users: those who bought (or liked) any of the user's RECENT_ITEMS most recently
# carted, bought or liked items, the PEERS with the most of them in common. A request reads at
# most PEERS stored peers, or expands at most RECENT_ITEMS x MAX_ITEM_USERS interactions.
RECENT_ITEMS = 10
PEERS = 50

# Each similar user's most recent purchases (or liked items) read per request: a peer who
# bought 50,000 items adds 200 candidates, not 50,000.
PEER_ITEMS = 200

# A preferred category contributes its most interacted-with items, read in order from an index
# (at most twice CATEGORY_ITEMS + 1 entries, ties included); its items without users, when it
# has fewer than CATEGORY_ITEMS with, follow in id order from another index (at most twice
# CATEGORY_ITEMS entries, whatever the category's size).
CATEGORY_ITEMS = 100
# ... from the user's TOP_CATEGORIES strongest preferred categories.
TOP_CATEGORIES = 3

# The user's most recent bought, carted or liked items whose stored item neighbours are read.
SEED_ITEMS = 10

# The items a recommendation leaves out (those the user bought or rated): a user with at most
# OWN_ITEMS aggregates has them all read once; past that, each candidate is tested for the
# user's edge, in score order until enough have passed (each test an expand-into, as long as
# the shorter of the user's and the item's INTERACTED: cheaper than reading hundreds of the
# user's own, dearer than reading a few dozen).
OWN_ITEMS = 200
# Item neighbours written with each run: each item's ITEM_NEIGHBOURS most similar items (a
# request reads SEED_ITEMS x ITEM_NEIGHBOURS at most), computed from each user's USER_ITEMS
# most recent interactions (the pairs one user adds grow with the square of their items).
ITEM_NEIGHBOURS = 20
USER_ITEMS = 200
# Item-to-item weights come from EASE, which inverts a dense items x items matrix (memory
# grows with the square of the items: 8 bytes x 5,000² = 200 MB twice, seconds on two cores);
# a larger catalogue gets item-kNN cosine, computed in blocks.
MODEL_ITEMS = 5000

# Segment favourites written with each run: the FAVOURITES items most bought by the
# TYPICAL_MEMBERS members nearest each leaf segment's centre, however many members it has.
TYPICAL_MEMBERS = 100
FAVOURITES = 50
# Each leaf segment's top categories and top items written with each run (the persona
# card's `topCategories`/`topItems`): as many as the API's default largest page.
PERSONA_TOPS = 100

LIMITS: dict[str, int] = {
    "max_item_users": MAX_ITEM_USERS,
    "recent_items": RECENT_ITEMS,
    "peers": PEERS,
    "top_categories": TOP_CATEGORIES,
    "peer_items": PEER_ITEMS,
    "category_items": CATEGORY_ITEMS,
    "seed_items": SEED_ITEMS,
    "own_items": OWN_ITEMS,
}
