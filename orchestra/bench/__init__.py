"""The benchmark harness behind ``orchestra bench``: canonical routing sets in, predictions and metrics out."""

from __future__ import annotations

import os
from pathlib import Path

from orchestra.errors import DataError

__all__ = ["data_dir"]


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the routing data lives: ``path`` if given, else ``$ORCHESTRA_DATA_DIR``, else ``../shared/data``
    beside the repository (the layout of a development checkout)."""
    if path is None:
        path = os.environ.get("ORCHESTRA_DATA_DIR")
    if path is None:
        # orchestra/bench/__init__.py -> repository root is two levels above the package folder
        path = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"data directory {str(resolved)!r} does not exist; pass --data or set ORCHESTRA_DATA_DIR")
    return resolved
