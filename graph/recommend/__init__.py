"""Recommendations by graph traversal (segment favourites, similar users, preferences, context),
each with the reasons that produced it."""
