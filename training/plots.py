"""The report plots, drawn with matplotlib on its Agg canvas (no display, no pyplot state). No torch.

One home for the Recall@K figure that `rtd eval` (OUT/recall.png) and `rtd eval compare` write, and that
bench/results_synthetic.py draws into docs/results-synthetic/ from the committed per-model results; and for
Figure 5, the average human rank per method with its 95 % interval, one panel per task (`rank_plot`, which
`rtd study report` draws: training/study_report.py). Each figure
is written twice: PNG (for Markdown) and SVG (vector, for papers and slides) beside it, byte-identical for
identical curves (no date in the SVG, fixed element ids), so a redrawn committed plot shows no diff.

Recall@K: one curve per method, K on a log axis with a tick at each cut-off, its bootstrap 95 % interval
(training/metrics.py `bootstrap_recall`) as a band where the report has one; the photo baseline in grey;
the chance level K / P dashed and beneath the data (a line drawn over the curves would hide a method at
chance, as rtdGAN's was in the PIL plot this replaced).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_SIZE_IN, PLOT_DPI = (8.8, 4.8), 100  # 880 x 480 px PNGs
PHOTO_COLOUR, CHANCE_COLOUR = "0.45", "0.6"
BAND_ALPHA = 0.18
# Drawing order (matplotlib's zorder): the grid, then chance, then interval bands, then the curves.
Z_CHANCE, Z_BAND, Z_CURVE = 1.5, 2.0, 3.0


@dataclass(frozen=True)
class Curve:
    """One line of a Recall@K plot: values at the cut-offs ks, optionally an interval (low, high) per K."""

    label: str
    ks: Sequence[int]
    values: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    kind: Literal["method", "baseline", "chance"] = "method"
    colour: str | None = None  # a matplotlib colour; None: the next of the cycle (the baseline grey)


def report_curve(row: dict) -> Curve:
    """The curve of one result row of a report.json (`rtd eval`): Recall@K, with its interval when it has one."""
    ks = sorted(int(k) for k in row["recall"])
    ci = row.get("recall_ci") or {}
    has_ci = all(str(k) in ci for k in ks)
    return Curve(row["label"], ks, [row["recall"][str(k)] for k in ks],
                 [ci[str(k)][0] for k in ks] if has_ci else None, [ci[str(k)][1] for k in ks] if has_ci else None,
                 "baseline" if row.get("method") == "photo" else "method")


def recall_plot(curves: Sequence[Curve], path: Path, title: str) -> list[Path]:
    """Draw the Recall@K plot of `curves` to `path` (.png) and the same name .svg; returns both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, NullLocator

    if not curves:
        raise ValueError("a Recall@K plot needs at least one curve")
    fig = Figure(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.12, 0.6, 0.78))  # the legend gets the right third
    colours = iter(f"C{i % 10}" for i in range(len(curves)))
    for curve in curves:
        ks = list(curve.ks)
        if curve.kind == "chance":
            ax.plot(ks, curve.values, linestyle="--", color=CHANCE_COLOUR, linewidth=1.2, label=curve.label,
                    zorder=Z_CHANCE)
            continue
        colour = curve.colour or (PHOTO_COLOUR if curve.kind == "baseline" else next(colours))
        ax.plot(ks, curve.values, marker="s" if curve.kind == "baseline" else "o", markersize=4, linewidth=2,
                color=colour, label=curve.label, zorder=Z_CURVE)
        if curve.low is not None and curve.high is not None:
            ax.fill_between(ks, curve.low, curve.high, color=colour, alpha=BAND_ALPHA, linewidth=0, zorder=Z_BAND)
    all_k = sorted({int(k) for c in curves for k in c.ks})
    if len(all_k) > 1:
        ax.set_xscale("log")
        ax.set_xlim(all_k[0] / 1.15, all_k[-1] * 1.15)
    ax.set_xticks(all_k, [str(k) for k in all_k])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("K (products returned)")
    ax.set_ylabel("Recall@K")
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, color="0.9", linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    bands = any(c.low is not None for c in curves)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9,
                       title="shaded: 95 % bootstrap interval" if bands else None, title_fontsize=8)
    legend.set_zorder(Z_CURVE + 1)
    return save_png_svg(fig, path)


@dataclass(frozen=True)
class RankBar:
    """One method's average human rank (1 = best) and its 95 % interval, in one task's panel of Figure 5."""

    label: str
    rank: float
    low: float
    high: float


def rank_plot(panels: dict[str, Sequence[RankBar]], path: Path, methods: int, title: str) -> list[Path]:
    """Figure 5 (Sec. 5.3): one panel per task, each method's average human rank as a bar with its 95 % interval
    as an error bar, rank 1 (best) at the left. Written to `path` (.png) and .svg; returns both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("a rank plot needs at least one task")
    fig = Figure(figsize=(PLOT_SIZE_IN[0], 1.2 + 0.45 * methods * len(panels)), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (task, bars), letter in zip(axes, panels.items(), "abcdefgh", strict=False):
        ys = list(range(len(bars)))[::-1]  # the first method on top
        ax.barh(ys, [b.rank for b in bars], color=[f"C{i % 10}" for i in range(len(bars))], height=0.6, zorder=Z_BAND)
        ax.errorbar([b.rank for b in bars], ys, xerr=[[b.rank - b.low for b in bars], [b.high - b.rank for b in bars]],
                    fmt="none", ecolor="0.15", capsize=4, linewidth=1.2, zorder=Z_CURVE)
        ax.set_yticks(ys, [b.label for b in bars])
        ax.set_xlim(0.0, max(methods, 2) + 0.2)
        ax.set_title(f"({letter}) {task}" + ("" if bars else ": no responses yet"), fontsize=10, loc="left")
        ax.grid(True, axis="x", color="0.9", linewidth=0.8, zorder=0)
        ax.set_axisbelow(True)
    axes[-1].set_xlabel("average human rank (1 = best), 95 % interval")
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    return save_png_svg(fig, path)


def save_png_svg(fig: Figure, path: Path) -> list[Path]:
    """`fig` as `path` with .png and .svg suffixes; the SVG without a date and with fixed ids, so a redrawn
    figure is byte-identical. Returns both paths."""
    from matplotlib import rc_context

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path.with_suffix(".png"), path.with_suffix(".svg")]
    with rc_context({"svg.hashsalt": "rtdgan"}):
        for out in written:
            fig.savefig(out, format=out.suffix[1:], metadata={"Date": None} if out.suffix == ".svg" else None)
    return written
