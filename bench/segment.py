"""Benchmark: feature preparation + segmentation at 10k, 100k and 1M users, and plain Ward.

Each size runs in its own process so its peak memory (max RSS) is its own. Feature matrices are
generated with planted groups in the layout of the real feature table (loading a million users
into the graph first would measure ingestion, not segmentation). Plain scikit-learn Ward runs at
10k only: its memory grows with the square of the users (about 40 GB at 100k).
Ends with one `RESULT` line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from graph.features.registry import FEATURES, log_scaled
from graph.segments.engine import HierarchicalSegmenter, make_preparation

CATEGORIES = 8
N_GROUPS = 5


def feature_names() -> list[str]:
    """The default selection's layout: behaviour, category shares, structure."""
    return ([f.name for f in FEATURES if f.family == "behaviour"]
            + [f"share:c{i}" for i in range(CATEGORIES)]
            + [f.name for f in FEATURES if f.family == "structure"])


def generate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Users in N_GROUPS planted groups, heavy-tailed where the real features are."""
    rng = np.random.default_rng(seed)
    names = feature_names()
    groups = rng.integers(0, N_GROUPS, size=n)
    centers = rng.normal(0.0, 1.5, size=(N_GROUPS, len(names)))
    X = centers[groups] + rng.normal(0.0, 0.6, size=(n, len(names)))
    for i, name in enumerate(names):
        if name in set(log_scaled(names)):
            X[:, i] = np.expm1(np.abs(X[:, i]) + 0.5)
    return X, groups


def run_one(n: int, plain_ward: bool) -> dict[str, float]:
    X, y = generate(n)
    t0 = time.perf_counter()
    if plain_ward:
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.preprocessing import StandardScaler

        labels = AgglomerativeClustering(n_clusters=N_GROUPS, linkage="ward").fit_predict(
            StandardScaler().fit_transform(X))
    else:
        Z = make_preparation(feature_names(), log_scaled(feature_names())).fit_transform(X)
        labels = HierarchicalSegmenter().fit(Z).labels_
    elapsed = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "seconds": elapsed, "peak_mb": peak_mb,
            "ari": float(adjusted_rand_score(y, labels))}


def measure(n: int, plain_ward: bool = False) -> dict[str, float]:
    args = [sys.executable, "-m", "bench.segment", "--one", str(n)]
    if plain_ward:
        args.append("--plain-ward")
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plain-ward", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.plain_ward)))
        return
    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        r = measure(n)
        results[n] = r
        print(f"persona-graph  n={n:>9,}: {r['seconds']:7.1f}s  peak {r['peak_mb']:7.0f} MB  "
              f"ARI vs planted {r['ari']:.3f}", flush=True)
    ward = measure(10_000, plain_ward=True)
    print(f"plain Ward     n={10_000:>9,}: {ward['seconds']:7.1f}s  "
          f"peak {ward['peak_mb']:7.0f} MB  ARI vs planted {ward['ari']:.3f}")
    get = results.get
    print("RESULT " + " ".join([
        f"t_10k_s={get(10_000, {}).get('seconds', float('nan')):.1f}",
        f"t_100k_s={get(100_000, {}).get('seconds', float('nan')):.1f}",
        f"t_1m_s={get(1_000_000, {}).get('seconds', float('nan')):.1f}",
        f"peak_mb_1m={get(1_000_000, {}).get('peak_mb', float('nan')):.0f}",
        f"ward_t_10k_s={ward['seconds']:.1f}",
    ]))


if __name__ == "__main__":
    main()
