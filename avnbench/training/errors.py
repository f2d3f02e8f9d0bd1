"""The error a torch method raises when ``predict`` finds no trained model."""

from __future__ import annotations

from pathlib import Path

from avnbench.errors import PluginError


class NotFittedError(PluginError):
    """``predict`` was called on a work folder that ``fit`` has not filled."""


def require_fitted(method: str, workdir: Path, *files: str) -> list[Path]:
    """The paths of ``files`` in ``workdir``; :class:`NotFittedError` naming the missing ones."""
    paths = [Path(workdir) / name for name in files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise NotFittedError(
            f"{workdir}: no trained {method} model ({', '.join(missing)} missing); "
            "run fit first (no model in WORKDIR)"
        )
    return paths
