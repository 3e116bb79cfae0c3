"""Benchmark: feature preparation + segmentation at 10k, 100k and 1M users, and plain Ward.

Each size runs in its own process so its peak memory (max RSS) is its own. Feature matrices are
generated with planted nested groups (2 parents x 3 children) in the layout of the real feature
table (loading a million users into the graph first would measure ingestion, not segmentation).
Plain scikit-learn Ward runs at 10k only: its memory grows with the square of the users (about
40 GB at 100k).
Ends with one `RESULT` line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from sklearn.metrics import adjusted_rand_score

from graph.features.registry import FEATURES, log_scaled
from graph.segments.engine import HierarchicalSegmenter, make_preparation
from graph.segments.synthetic import PlantedPopulation, planted_population

CATEGORIES = 8
PARENTS, CHILDREN = 2, 3  # planted nested groups: 6 leaf groups under 2 parents


def feature_names() -> list[str]:
    """The default selection's layout: behaviour, category shares, structure."""
    return ([f.name for f in FEATURES if f.family == "behaviour"]
            + [f"share:c{i}" for i in range(CATEGORIES)]
            + [f.name for f in FEATURES if f.family == "structure"])


def generate(n: int, seed: int = 0) -> PlantedPopulation:
    """Users in nested planted groups, heavy-tailed where the real features are."""
    names = feature_names()
    logged = set(log_scaled(names))
    return planted_population(n, len(names), parents=PARENTS, children=CHILDREN,
                              log_columns=[j for j, f in enumerate(names) if f in logged],
                              seed=seed)


def run_one(n: int, plain_ward: bool) -> dict[str, float]:
    pop = generate(n)
    t0 = time.perf_counter()
    parent_ari = float("nan")
    if plain_ward:
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.preprocessing import StandardScaler

        labels = AgglomerativeClustering(n_clusters=PARENTS * CHILDREN,
                                         linkage="ward").fit_predict(
            StandardScaler().fit_transform(pop.X))
    else:
        Z = make_preparation(feature_names(), log_scaled(feature_names())).fit_transform(pop.X)
        model = HierarchicalSegmenter().fit(Z)
        labels = model.labels_
        parent_ari = float(adjusted_rand_score(pop.parent, model.level_labels_[1]))
    elapsed = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "seconds": elapsed, "peak_mb": peak_mb,
            "ari": float(adjusted_rand_score(pop.leaf, labels)), "parent_ari": parent_ari}


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
              f"ARI vs planted leaves {r['ari']:.3f}, parents {r['parent_ari']:.3f}",
              flush=True)
    ward = measure(10_000, plain_ward=True)
    print(f"plain Ward     n={10_000:>9,}: {ward['seconds']:7.1f}s  "
          f"peak {ward['peak_mb']:7.0f} MB  ARI vs planted leaves {ward['ari']:.3f}")
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
