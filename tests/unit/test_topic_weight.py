"""The segmenter chooses how much the topic shares weigh: the smallest weight of its grid whose
choice of k holds on resampled users, so topics outweigh activity only where that makes the
personas steadier."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from graph.segments.engine import HierarchicalSegmenter

TOPICS = [4, 5, 6]


def population(activity_gap: float, topic_purity: float, n: int = 150,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prepared features as a run has them, both families of spread 1: four activity columns
    (two bands ``activity_gap`` apart on the first) and three topic shares (three subjects,
    each user's shares ``topic_purity`` its subject's, the rest random). Returns the rows and
    the subject of each user."""
    rng = np.random.default_rng(seed)
    subject = rng.integers(0, 3, n)
    activity = rng.normal(size=(n, 4))
    activity[:, 0] += activity_gap * rng.integers(0, 2, n)
    shares = (np.eye(3)[subject] * topic_purity
              + rng.dirichlet(np.ones(3), n) * (1.0 - topic_purity))
    families = []
    for block in (activity, shares):
        centred = block - block.mean(axis=0)
        families.append(centred / np.sqrt((centred ** 2).sum(axis=1).mean()))
    return np.hstack(families), subject


def segmenter(**params: Any) -> HierarchicalSegmenter:
    # Fewer stability refits than the default keep the test to seconds; the rule is the same.
    settings: dict[str, Any] = {"topic_columns": TOPICS, "n_resamples": 5,
                                "fallback_algorithm": None, **params}
    return HierarchicalSegmenter(**settings)


def test_topics_that_carry_the_structure_get_a_higher_weight() -> None:
    # Sharp activity bands crossed with the subjects: at weight 1 the k choice flips between
    # resamples (bands x subjects, or subjects); a higher weight makes the subjects steady.
    X, subject = population(activity_gap=4.0, topic_purity=0.5)
    model = segmenter().fit(X)
    first = model.weight_choice_[1.0]
    assert not first["stable"], model.weight_choice_
    assert model.topic_weight_ is not None and model.topic_weight_ > 1.0
    chosen = model.weight_choice_[model.topic_weight_]
    assert chosen["resample_ari"] > first["resample_ari"] + 0.05, model.weight_choice_
    assert chosen["resample_ks"].count(model.n_clusters_) >= 4
    assert adjusted_rand_score(subject, model.labels_) >= 0.9
    # Distances (and so newcomers) are measured in the weighted space the model chose.
    assert np.array_equal(model.feature_scale_[TOPICS], [model.topic_weight_] * 3)
    weighted = X * model.feature_scale_
    nearest = ((weighted[:, None, :] - model.cluster_centers_[None]) ** 2).sum(axis=2)
    assert np.array_equal(model.predict(X), nearest.argmin(axis=1))
    assert (model.predict(X) == model.labels_).mean() >= 0.95


def test_topics_that_carry_no_structure_keep_weight_one() -> None:
    X, _ = population(activity_gap=6.0, topic_purity=0.0)
    model = segmenter().fit(X)
    assert model.topic_weight_ == 1.0 and list(model.weight_choice_) == [1.0]
    assert model.weight_choice_[1.0]["stable"] and model.n_clusters_ == 2


def test_a_forced_weight_is_the_same_as_scaling_the_topics() -> None:
    X, _ = population(activity_gap=4.0, topic_purity=0.5)
    forced = segmenter(topic_weight=2.0).fit(X)
    assert forced.topic_weight_ == 2.0 and forced.weight_choice_ == {}
    scaled = X.copy()
    scaled[:, TOPICS] *= 2.0
    plain = clone(forced).set_params(topic_columns=(), topic_weight="auto").fit(scaled)
    assert plain.topic_weight_ is None
    assert np.array_equal(forced.labels_, plain.labels_)
    assert np.allclose(forced.transform(X), plain.transform(scaled))


def test_the_weight_choice_resamples_a_bounded_pool() -> None:
    # Above stability_sample users, the weights are judged on a seeded sample of that many,
    # then the whole population is fitted once at the chosen weight.
    X, _ = population(activity_gap=6.0, topic_purity=0.0, n=400)
    model = segmenter(stability_sample=120).fit(X)
    assert model.labels_.shape == (400,) and model.topic_weight_ == 1.0
    refit = segmenter(stability_sample=120).fit(X)
    assert refit.weight_choice_ == model.weight_choice_


@pytest.mark.parametrize("columns, weight, message", [
    ([7], "auto", "out of range"), ([4], 0.0, "positive")])
def test_bad_topic_settings_are_clear_errors(columns: list[int], weight: object,
                                             message: str) -> None:
    X, _ = population(activity_gap=4.0, topic_purity=0.5, n=30)
    with pytest.raises(ValueError, match=message):
        segmenter(topic_columns=columns, topic_weight=weight).fit(X)
