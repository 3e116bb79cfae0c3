from __future__ import annotations

import networkx as nx
import numpy as np

from graph.features.table import spectral_embedding


def two_communities(seed: int, users: int = 60) -> tuple[nx.Graph, list[str], np.ndarray]:
    """Users of two groups, each mostly using its own items."""
    rng = np.random.default_rng(seed)
    g = nx.Graph()
    group = np.arange(users) % 2
    for u in range(users):
        for _ in range(8):
            own = rng.random() < 0.9
            item = rng.integers(0, 10) + (10 * group[u] if own else 10 * (1 - group[u]))
            g.add_edge(("u", f"u{u:03d}"), ("i", f"i{item:02d}"), weight=1.0 + rng.random())
    return g, [f"u{u:03d}" for u in range(users)], group


def test_embedding_separates_communities_and_is_repeatable() -> None:
    g, users, group = two_communities(seed=1)
    emb = spectral_embedding(g, users)
    assert emb.shape == (60, 2) and np.isfinite(emb).all()
    # The first axis splits the two groups by sign.
    side = emb[:, 0] > 0
    assert max((side == group).mean(), (side != group).mean()) == 1.0
    # Insertion order of the graph does not matter; the same graph gives the same embedding.
    shuffled = nx.Graph()
    edges = list(g.edges(data=True))
    for u, v, d in reversed(edges):
        shuffled.add_edge(v, u, **d)
    assert np.allclose(spectral_embedding(shuffled, users), emb)


def test_users_outside_the_graph_are_missing() -> None:
    g, users, _ = two_communities(seed=2)
    emb = spectral_embedding(g, [*users, "stranger"])
    assert np.isnan(emb[-1]).all() and np.isfinite(emb[:-1]).all()
    tiny = nx.Graph([(("u", "a"), ("i", "x"))])
    assert np.isnan(spectral_embedding(tiny, ["a"])).all()
