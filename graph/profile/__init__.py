"""The read model of a user and a persona: what the graph says about them, and the rules for
reading it (consent, points in time, confidence, a chatbot's context and its token budget).

Asynchronous: every function takes a ``graph.db.Reader`` (one read query, one round trip) and
returns plain dataclasses. The API maps them to GraphQL types; nothing here knows of GraphQL.
"""
