"""Interactive demos that degrade gracefully.

Sliders need a widget front end (JupyterLab, Notebook, VS Code, Colab). When a
notebook is executed headless (nbval, nbconvert, nbgrader) nobody can move a
slider, so the same plotting function is drawn once per static setting instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import matplotlib.pyplot as plt

T = TypeVar("T")


def widget_frontend_available() -> bool:
    """Best guess whether a human-facing front end will render widgets.

    ``COURSE_WIDGETS=1``/``0`` forces the answer. Otherwise: Colab, or a kernel
    started by a Jupyter server (which sets ``JPY_SESSION_NAME``) or by VS Code.
    Kernels started by nbclient (nbval, nbconvert, nbgrader) have neither.
    """
    forced = os.environ.get("COURSE_WIDGETS")
    if forced in {"0", "1"}:
        return forced == "1"
    if "google.colab" in sys.modules:
        return True
    return bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID"))


def _in_jupyter_kernel() -> bool:
    """True inside an IPython kernel (Jupyter, Colab, nbclient), False in a terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def progress_bar(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """A tqdm progress bar over ``iterable`` that suits where the code runs.

    A widget bar where a front end draws widgets (JupyterLab, Notebook, VS Code, Colab),
    a text bar in a terminal, and no bar at all in a notebook executed headless (nbval,
    nbconvert, nbgrader): nobody watches it there, and a stored bar would put random widget
    ids or timings into the notebook file, so every re-run would change it.
    """
    if widget_frontend_available():
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
        if _in_jupyter_kernel():
            kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


def slider_demo(
    draw: Callable[..., None],
    sliders: Mapping[str, tuple[float, float, float, float]],
    static_settings: Sequence[Mapping[str, float]],
) -> None:
    """Show ``draw(**values)`` with one slider per entry of ``sliders``.

    ``sliders`` maps an argument name to ``(min, max, step, start)``. Without a
    widget front end, ``draw`` is called once for each of ``static_settings``.
    ``draw`` creates a figure; it is shown (and closed) after each call.
    """
    for name, spec in sliders.items():
        if len(spec) != 4 or not spec[0] <= spec[3] <= spec[1]:
            raise ValueError(f"slider {name!r} needs (min, max, step, start) with min <= start <= max, "
                             f"got {spec!r}")
    if not widget_frontend_available():
        for setting in static_settings:
            draw(**setting)
            plt.show()
        return

    import ipywidgets as widgets
    from IPython.display import display

    controls = {
        name: widgets.FloatSlider(min=lo, max=hi, step=step, value=start, description=name,
                                  continuous_update=False)
        for name, (lo, hi, step, start) in sliders.items()
    }
    def redraw(**values: float) -> None:
        draw(**values)
        plt.show()

    display(widgets.interactive(redraw, **controls))
