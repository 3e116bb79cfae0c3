"""The segmenter is a scikit-learn estimator in full: scikit-learn's own checks pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import estimator_checks_generator

from graph.segments.engine import HierarchicalSegmenter


def _name(check: Any) -> str:
    return str(getattr(check, "func", check).__name__)


# Few resamples and ks keep the ~50 checks to seconds; every code path still runs. The
# array-API check is left out: the segmenter works on NumPy arrays only and says nothing else
# (scikit-learn skips that check unless SCIPY_ARRAY_API is set).
CHECKS = [(estimator, check) for estimator, check in estimator_checks_generator(
    HierarchicalSegmenter(k_max=4, n_resamples=2), legacy=True, mark=None)
    if _name(check) != "check_array_api_input"]


@pytest.mark.parametrize(("estimator", "check"), CHECKS,
                         ids=[_name(check) for _, check in CHECKS])
def test_scikit_learn_estimator_checks(estimator: Any, check: Callable[[Any], None]) -> None:
    check(estimator)


def test_transform_gives_distances_to_the_centres_of_any_rows() -> None:
    X, _ = make_blobs(n_samples=150, centers=3, n_features=4, random_state=1)
    model = HierarchicalSegmenter(n_resamples=0).fit(X[:100])
    new = X[100:]
    d = model.transform(new)
    assert d.shape == (50, model.n_clusters_)
    expected = np.linalg.norm(new[:, None, :] - model.cluster_centers_[None], axis=2)
    assert np.allclose(d, expected)
    assert (model.predict(new) == d.argmin(axis=1)).all()


def test_unfitted_and_mismatched_input_are_clear_errors() -> None:
    X, _ = make_blobs(n_samples=60, centers=2, n_features=3, random_state=2)
    with pytest.raises(NotFittedError):
        HierarchicalSegmenter().predict(X)
    model = HierarchicalSegmenter(n_resamples=0).fit(X)
    with pytest.raises(ValueError, match="3 features"):
        model.transform(X[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        HierarchicalSegmenter().fit(np.where(X > 1, np.nan, X))


def test_composes_in_a_pipeline() -> None:
    X, y = make_blobs(n_samples=200, centers=3, n_features=4, random_state=3)
    pipe = make_pipeline(StandardScaler(), HierarchicalSegmenter(n_clusters=3, n_resamples=0))
    labels = pipe.fit_predict(X * 100.0)
    assert len(set(labels)) == 3
    assert pipe.transform(X[:5] * 100.0).shape == (5, 3)
