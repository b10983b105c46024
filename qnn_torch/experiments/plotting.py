"""Figures of the experiments: one set-up of a Matplotlib figure, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qnn_torch.io import atomic_path


def blank_figure(size: tuple[float, float]) -> Figure:
    """A figure of ``size`` inches on the Agg canvas (no display needed), laid out tightly."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def new_figure(
    rows: int = 1, columns: int = 1, size: tuple[float, float] = (6.0, 3.8)
) -> tuple[Figure, np.ndarray]:
    """A :func:`blank_figure` with a (rows, columns) array of axes."""
    fig = blank_figure(size)
    return fig, fig.subplots(rows, columns, squeeze=False)


def savefig_atomic(fig: Figure, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig(path, **kwargs)`` atomically; the format comes from the path's suffix."""
    path = Path(path)
    with atomic_path(path) as temp:
        fig.savefig(temp, format=path.suffix.lstrip(".") or None, **kwargs)
