"""What went into a version, as JSON-serializable data (``f.version_info()``, the CLI's show).

The function (module, qualname, whether its source or its bytecode was used), the wrapper
layers, the helpers followed with a short digest each, the captured functions and classes,
the constants with their repr, and the packages with their versions: the walk's record
(basis.py) without the keys it uses internally.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from persistmemo._versioning.basis import VersionBasis


def explanation(basis: VersionBasis) -> dict[str, Any]:
    """``basis`` described: its version and every part that went into it."""
    innermost = next(
        (layer for layer in reversed(basis.layers) if layer["basis"] != "library"),
        basis.layers[-1],
    )
    return {
        "version": basis.version(),
        "function": _public(innermost),
        "layers": [_public(layer) for layer in basis.layers if layer is not innermost],
        "helpers": sorted(
            (_public(entry) for entry in basis.helpers.values()),
            key=lambda entry: (entry["module"], entry["qualname"], entry["digest"]),
        ),
        "captured": sorted(basis.captured),
        "constants": [basis.constants[key] for key in sorted(basis.constants)],
        "packages": dict(sorted(basis.package_versions.items())),
        "include_globals": basis.include_globals,
    }


def _public(entry: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in entry.items() if name != "key"}
