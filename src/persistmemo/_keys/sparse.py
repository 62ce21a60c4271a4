"""scipy.sparse matrices and arrays: keyed by format, shape and their buffers' content.

A sparse matrix stands for ``[format, shape, buffers...]``: ``data, indices, indptr`` (csr,
csc, bsr), ``data, coords...`` (coo), ``data, offsets`` (dia), each a numpy array keyed as
arrays are (dtype, shape and the BLAKE3 digest of its bytes, hashed in place). Buffers are
keyed as they are stored: the same matrix with unsorted indices or explicit zeros is another
key (a function can tell them apart). dok and lil have no buffers to hash: they are keyed
by their csr form. scipy is never imported here: a matrix exists once it is loaded.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SPARSE_ENTRY = "scipy.sparse/1"
"""The entry's name in the key bytes: a change to what a matrix stands for bumps it."""


def sparse_types() -> tuple[type, ...]:
    """scipy's sparse base classes (matrices and arrays), when scipy.sparse is loaded."""
    sparse = sys.modules.get("scipy.sparse")
    if sparse is None:
        return ()
    found = (getattr(sparse, "spmatrix", None), getattr(sparse, "sparray", None))
    return tuple(cls for cls in found if isinstance(cls, type))


def sparse_label(cls: type) -> str | None:
    """``scipy.sparse.csr_matrix``: the public name of one of scipy's own classes (its
    defining module is private, and has moved before), or None for another subclass."""
    sparse = sys.modules["scipy.sparse"]
    if getattr(sparse, cls.__name__, None) is cls:
        return f"scipy.sparse.{cls.__name__}"
    return None


def represent_sparse(matrix: Any) -> object:
    """The value a sparse matrix is keyed by (the entry's function)."""
    form = matrix.format
    if form in ("dok", "lil"):
        canonical = matrix.tocsr()
        canonical.sum_duplicates()  # sorts the indices too: dok has no order of its own
        buffers = [canonical.data, canonical.indices, canonical.indptr]
    elif form in ("csr", "csc", "bsr"):
        buffers = [matrix.data, matrix.indices, matrix.indptr]
    elif form == "coo":
        coords = getattr(matrix, "coords", None)  # scipy < 1.13 has only row and col
        buffers = [matrix.data, *(coords if coords is not None else (matrix.row, matrix.col))]
    elif form == "dia":
        buffers = [matrix.data, matrix.offsets]
    else:
        raise TypeError(f"scipy.sparse format {form!r} has no key encoding")
    return [form, list(matrix.shape), *buffers]
