"""Plots for the book: seaborn/matplotlib with a CJK font, so Chinese labels render, not boxes."""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import matplotlib

CJK_FONTS = (
    "WenQuanYi Micro Hei",  # Debian/Ubuntu/Colab: apt-get install fonts-wqy-microhei
    "WenQuanYi Zen Hei",
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "PingFang SC",  # macOS
    "Heiti SC",
    "Microsoft YaHei",  # Windows
    "SimHei",
)
INSTALL_HINT = "install one, e.g. 'sudo apt-get install fonts-wqy-microhei' (Debian/Ubuntu/Colab)"


def find_cjk_font() -> str | None:
    """Name of an installed font that has Chinese glyphs, or ``None``.

    matplotlib caches its font list; a font installed after the cache was written is found by
    rebuilding the cache once.
    """
    from matplotlib import font_manager

    def lookup(manager):
        names = {f.name for f in manager.ttflist}
        return next((name for name in CJK_FONTS if name in names), None)

    found = lookup(font_manager.fontManager)
    if found is None:
        font_manager.fontManager = font_manager._load_fontmanager(try_read_cache=False)
        found = lookup(font_manager.fontManager)
    return found


def setup(style: str = "whitegrid") -> None:
    """Seaborn theme, PNG figures, and a CJK font first in line (see :func:`find_cjk_font`).

    Returns nothing, so a notebook's set-up cell shows no output (nbval ignores a trailing ``;``).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style=style, context="notebook")
    font = find_cjk_font()
    if font is None:
        warnings.warn(f"no CJK font found, Chinese labels will show as boxes; {INSTALL_HINT}", stacklevel=2)
    else:
        plt.rcParams["font.sans-serif"] = [font] + list(plt.rcParams["font.sans-serif"])
        plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False  # the CJK fonts lack U+2212
    plt.rcParams["figure.dpi"] = 100
    plt.rcParams["savefig.dpi"] = 100
    try:  # PNG, not SVG: nbval compares SVG text, which is not stable
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - only outside IPython
        pass


def plot_curves(curves: Mapping[str, Sequence[float]], xlabel: str, ylabel: str, title: str | None = None,
                x: Sequence[float] | None = None, logy: bool = False, ax=None):
    """Line plot of several named curves (loss curves, perplexity over iterations …)."""
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_curves needs at least one curve")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, ys in curves.items():
        xs = list(x) if x is not None else list(range(1, len(ys) + 1))
        if len(xs) != len(ys):
            raise ValueError(f"curve {label!r} has {len(ys)} points but x has {len(xs)}")
        ax.plot(xs, list(ys), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def heatmap(matrix, row_labels: Sequence[str], col_labels: Sequence[str], title: str | None = None,
            ax=None, cmap: str = "viridis", annot: bool = False, fmt: str = ".2f"):
    """Seaborn heat map with (Chinese) tick labels: attention weights, confusion matrices."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    matrix = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(row_labels)} row and {len(col_labels)} column labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.45 * len(col_labels), 0.8 + 0.4 * len(row_labels)))
    sns.heatmap(matrix, xticklabels=list(col_labels), yticklabels=list(row_labels), cmap=cmap,
                annot=annot, fmt=fmt, ax=ax, cbar=True, square=False)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title)
    return ax


matplotlib.rcParams.setdefault("figure.max_open_warning", 50)
