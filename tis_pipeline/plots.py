"""Plots for the UI: matplotlib figures as PNG, shown in Dagster metadata as markdown-embedded images.

No Dagster here: domain ``logic.py`` modules may draw with it too.
"""

from __future__ import annotations

import base64
import io
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the non-interactive Agg backend (imported on use: it costs a second)."""
    from tis_pipeline.run_process import import_heavy

    import_heavy("matplotlib").use("Agg")
    return import_heavy("matplotlib.pyplot")


def figure_png(fig: Figure, tight: bool = True) -> bytes:
    """The figure as PNG bytes; the figure is closed (pyplot keeps every open figure alive).

    ``tight`` crops to the drawn content, which draws the figure twice; figures laid out by hand pass False.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG as a markdown image with a data URL (what ``MetadataValue.md`` renders in the UI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
