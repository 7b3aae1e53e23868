"""Pareto fronts of multi-objective results, and their plot.

A point *dominates* another when it is at least as good in every objective and strictly better
in one; the Pareto front is the set of points no other point dominates. Each objective is
maximised (``"max"``: GOPS, Fmax) or minimised (``"min"``: LUT4s, DSPs). Equal points do not
dominate each other, so duplicates on the front are all kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["SENSES", "dominates", "pareto_front", "plot_front", "finish_png"]

SENSES = ("max", "min")


def _check(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[tuple[float, ...]]:
    if not senses:
        raise ValueError("senses must name at least one objective, not an empty sequence")
    for sense in senses:
        if sense not in SENSES:
            raise ValueError(f"each sense must be 'max' or 'min', not {sense!r}")
    checked = []
    for n, point in enumerate(points):
        if len(point) != len(senses):
            raise ValueError(f"point {n} has {len(point)} values for {len(senses)} objectives: "
                             f"{point!r}")
        values = tuple(float(v) for v in point)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"point {n} must have finite values, not {point!r}")
        checked.append(values)
    return checked


def dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[str]) -> bool:
    """Whether point ``a`` dominates point ``b`` under ``senses``."""
    a, b = _check([a, b], senses)
    better = False
    for x, y, sense in zip(a, b, senses):
        if sense == "min":
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_front(points: Sequence[Sequence[float]], senses: Sequence[str]) -> list[int]:
    """Indices (ascending) of the points of ``points`` that no other point dominates.

    Parameters
    ----------
    points : sequence of sequences of float
        One value per objective for each point.
    senses : sequence of str
        ``"max"`` or ``"min"`` for each objective.
    """
    checked = _check(points, senses)
    # Flip minimised objectives so that larger is better everywhere.
    signs = [1.0 if s == "max" else -1.0 for s in senses]
    scored = [tuple(v * s for v, s in zip(p, signs)) for p in checked]
    front = []
    for i, p in enumerate(scored):
        if not any(all(x >= y for x, y in zip(q, p)) and q != p for q in scored):
            front.append(i)
    return front


def plot_front(points: Sequence[Sequence[float]], senses: Sequence[str], names: Sequence[str],
               path: str | Path | BinaryIO, *, labels: Sequence[str] | None = None,
               title: str = "") -> list[int]:
    """Draw every point and mark the Pareto front (PNG at ``path``, a file name or a binary
    file); return the front.

    With two objectives, one scatter plot with the front joined in order; with more, one panel
    per pair of objectives, the front (over all objectives) marked in each.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    front = pareto_front(points, senses)
    if len(names) != len(senses):
        raise ValueError(f"names must give one name per objective ({len(senses)}), "
                         f"not {names!r}")
    if len(senses) < 2:
        raise ValueError(f"a front plot needs at least two objectives, not {len(senses)}")
    pairs = [(i, j) for i in range(len(senses)) for j in range(i + 1, len(senses))]
    figure = Figure(figsize=(6.4 * min(len(pairs), 3), 4.8 * math.ceil(len(pairs) / 3)))
    FigureCanvasAgg(figure)
    on_front = set(front)
    for n, (i, j) in enumerate(pairs):
        ax = figure.add_subplot(math.ceil(len(pairs) / 3), min(len(pairs), 3), n + 1)
        rest = [p for k, p in enumerate(points) if k not in on_front]
        if rest:
            ax.scatter([p[i] for p in rest], [p[j] for p in rest], color="0.6", s=18,
                       label="dominated")
        best = sorted((points[k] for k in front), key=lambda p: (p[i], p[j]))
        ax.plot([p[i] for p in best], [p[j] for p in best], "o-", color="C3", ms=6,
                label="Pareto front")
        if labels is not None:
            for k in front:
                ax.annotate(labels[k], (points[k][i], points[k][j]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(f"{names[i]} ({'higher' if senses[i] == 'max' else 'lower'} is better)")
        ax.set_ylabel(f"{names[j]} ({'higher' if senses[j] == 'max' else 'lower'} is better)")
    finish_png(figure, figure.axes, path, title)
    return front


def finish_png(figure, axes, path: str | Path | BinaryIO, title: str = "") -> None:
    """The house style of Lutra's plots: a light grid and a legend on each of ``axes``, the
    ``title`` above them all, written to ``path`` as PNG."""
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
