"""A transformer that notes every fit in a file, to tell a computed step from a stored one
across processes; imported only by the tests that need scikit-learn."""

from __future__ import annotations

import os
from typing import Any

from golden_estimators import Scale


class CountedScale(Scale):
    """``Scale`` that appends a line to ``$COUNTED_FITS`` each time it is fitted."""

    def fit(self, X: Any, y: Any = None) -> CountedScale:
        with open(os.environ["COUNTED_FITS"], "a") as fits:
            fits.write("fit\n")
        super().fit(X, y)
        return self
