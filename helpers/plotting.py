"""A consistent figure style set in code (no style sheet fetched by URL) and
small plotting helpers shared by several tutorials."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import LogFormatter

COURSE_STYLE: dict[str, object] = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 90,
    "figure.autolayout": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 2.0,
    "image.cmap": "viridis",
    "axes.prop_cycle": mpl.cycler(
        color=["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
    ),  # Okabe-Ito: distinguishable with colour-vision deficiency
}


PNG_COLOURS = 256  # figures are flat colours, text and colour maps: a palette keeps them crisp
PNG_COMPRESS_LEVEL = 6  # zlib's default: ~3x faster than 9 for figures a few per cent larger


def figure_png(fig: mpl.figure.Figure, *, dpi: float | None = None) -> bytes | None:
    """``fig`` as a small, reproducible PNG: opaque RGB quantised to a 256-colour palette.

    Matplotlib writes RGBA PNGs with a timestamp-free but version-stamped header; a
    palette image of the same pixels is about a third of the size, looks the same for
    line plots, heat maps and text, and holds nothing but the pixels (no metadata), so
    re-running a notebook stores byte-identical figures. Empty figures give ``None``
    (nothing displayed), as IPython's own formatter does.
    """
    if not fig.axes and not fig.lines and not fig.texts and not fig.images:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image, ImageChops  # a dependency of matplotlib

    engine = fig.get_layout_engine()
    if engine is None or not isinstance(fig.canvas, FigureCanvasAgg) or dpi not in (None, fig.dpi):
        # Nothing keeps the content on the canvas (or another canvas, another resolution):
        # let matplotlib find the content and write the PNG.
        buffer = io.BytesIO()
        fig.canvas.print_figure(buffer, format="png", dpi=dpi or fig.dpi, bbox_inches="tight",
                                facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor())
        image = Image.open(buffer).convert("RGBA")
        crop = False
    else:
        # Lay the figure out once, draw it once with the layout frozen, take the pixels
        # straight from the canvas and crop the blank margin off them: bbox_inches="tight"
        # costs two more layout passes, a dry-run draw and a PNG written only to be read
        # back, about half the time of a figure full of text. The crop matches
        # bbox_inches="tight" to within a pixel or two; the same figure, built afresh,
        # always gives the same bytes (a notebook draws each figure once).
        engine.execute(fig)
        fig.set_layout_engine("none")
        try:
            fig.canvas.draw()
            image = Image.fromarray(np.array(fig.canvas.buffer_rgba()), "RGBA")
        finally:
            fig.set_layout_engine(engine)
        crop = True
    opaque = Image.new("RGBA", image.size, "white")
    opaque.alpha_composite(image)
    opaque = opaque.convert("RGB")
    if crop:
        blank = Image.new("RGB", opaque.size, opaque.getpixel((0, 0)))  # the background
        content = ImageChops.difference(opaque, blank).getbbox()
        if content is not None:
            pad = round(mpl.rcParams["savefig.pad_inches"] * fig.dpi)  # as bbox_inches="tight"
            left, top, right, bottom = content
            opaque = opaque.crop((max(left - pad, 0), max(top - pad, 0),
                                  min(right + pad, opaque.width), min(bottom + pad, opaque.height)))
    # Fast octree: a few milliseconds per figure (median cut and optimize=True cost ~0.25 s).
    palette = opaque.quantize(colors=PNG_COLOURS, method=Image.Quantize.FASTOCTREE,
                              dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def _figure_png_base64(fig: mpl.figure.Figure) -> str | None:
    data = figure_png(fig)
    return None if data is None else base64.b64encode(data).decode("ascii")


def use_course_style() -> None:
    """Apply the course's matplotlib style to every later figure.

    In a notebook, figures are also displayed through :func:`figure_png` (small palette
    PNGs that are identical on every re-run) instead of matplotlib's RGBA PNGs.
    """
    mpl.rcParams.update(COURSE_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing is displayed inline
        return
    shell = get_ipython()
    if shell is not None:
        # Load the inline backend now: on first load it installs matplotlib's own PNG
        # formatter (once per kernel), which would otherwise replace ours at the first figure.
        plt.switch_backend(mpl.get_backend())
        formatter = shell.display_formatter.formatters["image/png"]
        formatter.for_type(mpl.figure.Figure, _figure_png_base64)


def to_numpy(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """Detach, move to CPU and convert: safe for tensors on any device."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def heatmap(
    ax: plt.Axes,
    matrix: torch.Tensor | np.ndarray,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xticklabels: Sequence[str] | None = None,
    yticklabels: Sequence[str] | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    fmt: str = ".2f",
    colorbar_label: str | None = None,
) -> mpl.image.AxesImage:
    """Draw a labelled matrix (attention weights, scores...) with a colour bar.

    ``annotate`` writes each value (formatted with ``fmt``) in its cell, black on light
    cells and white on dark ones; non-finite cells (masked with nan) stay blank.
    """
    data = to_numpy(matrix)
    if data.ndim != 2:
        raise ValueError(f"heatmap expects a 2-D matrix, got shape {tuple(data.shape)}")
    image = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), xticklabels, rotation=45, ha="right")
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), yticklabels)
    if annotate:
        for (i, j), value in np.ndenumerate(data):
            if not np.isfinite(value):
                continue
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # perceived luminance
            text = ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=8,
                           color="white" if dark else "black")
            text.set_in_layout(False)  # inside its cell: the layout need not measure it
    colorbar = ax.figure.colorbar(image, ax=ax)
    if colorbar_label:
        colorbar.set_label(colorbar_label)
    return image


class _PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (0.2, 1, 30), without mathtext."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def plain_log_ticks(ax: plt.Axes, axis: str = "both") -> None:
    """Label the log-scaled ``axis`` ("x", "y" or "both") of ``ax`` with plain numbers.

    Matplotlib's default log labels ($10^{-1}$, $2\\times10^{-1}$) are typeset with
    mathtext, which is slow to lay out; plain labels read the same for the few decades a
    course figure spans. Call it after the axis is made logarithmic.
    """
    for which in ("x", "y") if axis == "both" else (axis,):
        target = ax.xaxis if which == "x" else ax.yaxis
        if target.get_scale() != "log":
            continue
        target.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
        target.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False,
                                                      minor_thresholds=(2, 0.5)))


def plot_history(history: dict[str, list[float]], *, title: str = "Training") -> None:
    """Loss and (if recorded) accuracy curves from :func:`helpers.training.train`."""
    has_acc = any(key.endswith("acc") for key in history)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 3.5))
    axes = np.atleast_1d(axes)
    for key in ("train_loss", "val_loss"):
        if history.get(key):
            axes[0].plot(history[key], label=key.replace("_", " "))
    axes[0].set(title=f"{title}: loss", xlabel="epoch", ylabel="loss")
    axes[0].legend()
    if has_acc:
        for key in ("train_acc", "val_acc"):
            if history.get(key):
                axes[1].plot(history[key], label=key.replace("_", " "))
        axes[1].set(title=f"{title}: accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
        axes[1].legend()
    plt.show()
