"""scikit-learn estimators whose key encodings the golden vectors hold fixed (their module
name is in the keys); imported only by the tests that need scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Scale(TransformerMixin, BaseEstimator):
    """Subtracts the mean it learned, then multiplies by ``factor``."""

    def __init__(self, factor: float = 1.0, offset: Any = None) -> None:
        self.factor = factor
        self.offset = offset

    def fit(self, X: Any, y: Any = None) -> Scale:
        self.mean_ = np.asarray(X).mean(axis=0)
        return self

    def transform(self, X: Any) -> Any:
        return (np.asarray(X) - self.mean_) * self.factor


class Chain(BaseEstimator):
    """A meta-estimator: estimators inside its parameters."""

    def __init__(self, first: Any = None, second: Any = None) -> None:
        self.first = first
        self.second = second
