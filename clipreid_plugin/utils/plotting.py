"""Shared drawing helpers: matplotlib for charts (an optional extra), one PIL font for pictures.

Charts (training curves, benchmark bars) are drawn with matplotlib, which is not a core
dependency: ``pip install 'clipreid_plugin[plots]'`` (``make demo`` installs it). Without it,
:func:`require_pyplot` raises a :class:`~clipreid_plugin.utils.errors.MissingDependencyError`
that says so. Image compositing (rank strips) needs only PIL and uses :func:`pil_font`.
"""

import os
from typing import Tuple

from PIL import ImageDraw, ImageFont

from .file_io import atomic_write
from .optional import import_optional

__all__ = ["require_pyplot", "save_figure", "pil_font", "text_size", "fit_text"]


def require_pyplot(what: str = "This chart"):
    """Import ``matplotlib.pyplot`` with the file-only Agg backend.

    Args:
        what: the picture that needs it, named in the error message.

    Returns:
        The ``matplotlib.pyplot`` module.

    Raises:
        MissingDependencyError: matplotlib is not installed (the message names the extra).
    """
    matplotlib = import_optional("matplotlib", f"{what} (drawn with matplotlib)", "plots", "matplotlib")
    matplotlib.use("Agg", force=False)  # no display needed; keeps an explicitly chosen backend
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after the backend choice above (the [plots] extra)

    return plt


def save_figure(fig, path: str, **savefig_kw) -> None:
    """Atomically write a matplotlib figure to ``path`` (its folder is created), then close the
    figure, also when writing fails.

    Args:
        fig: the figure.
        path: the file to write.
        savefig_kw: passed to ``fig.savefig`` (``format``, ``dpi``, ``bbox_inches``, ...); the
            format defaults to the file's extension.

    Raises:
        OutputWriteError: the file cannot be written (naming ``path`` and the cause).
    """
    savefig_kw.setdefault("format", os.path.splitext(path)[1].lstrip(".").lower() or "png")
    try:
        atomic_write(path, lambda f: fig.savefig(f, **savefig_kw))
    finally:
        require_pyplot().close(fig)


def pil_font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels when the system has it (most Linux installs, and every
    matplotlib install ships it), else PIL's built-in font.

    Args:
        size: font size in pixels.

    Returns:
        A PIL font.
    """
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:  # matplotlib's copy, when the system has none
        import matplotlib  # noqa: PLC0415 - the [plots] extra, optional here (a fallback font)

        return ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf", size)
    except (ImportError, OSError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single fixed-size bitmap font
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, font) -> Tuple[int, int]:
    """Returns: (width, height) in pixels of ``text`` drawn with ``font``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, max_width: int) -> str:
    """Shorten ``text`` in the middle ("0002_c1…_03.jpg") until it fits ``max_width`` pixels.

    Args:
        draw: a drawing context (for measuring).
        text: the text.
        font: the font it is drawn with.
        max_width: available width in pixels.

    Returns:
        ``text`` itself when it fits, else its start and end around an ellipsis (at least the
        ellipsis alone).
    """
    if text_size(draw, text, font)[0] <= max_width:
        return text
    keep = len(text) - 1
    while keep > 0:
        head, tail = (keep + 1) // 2, keep // 2
        candidate = text[:head] + "\u2026" + (text[-tail:] if tail else "")
        if text_size(draw, candidate, font)[0] <= max_width:
            return candidate
        keep -= 1
    return "\u2026"
