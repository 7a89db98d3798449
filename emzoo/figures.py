"""Comparison figures for ``emzoo evaluate``: reconstructions and their error maps side by side.

Drawn with Pillow (a dependency already), so no plotting library is needed. Layout::

    ground truth | linear | cubic | model        <- the same crop of one dropped slice
    error scale  | |linear - gt| | |cubic - gt| | |model - gt|   <- one shared scale, white = large

Each title carries the method's PSNR on that slice; the error maps share one scale (printed under
the ground truth) so the darker map is the better reconstruction.

Example:
    >>> from emzoo import figures
    >>> figures.comparison_figure("fig.png", {"ground truth": gt, "linear": lin, "model": out},
    ...                           title="x4, slice 42")                      # doctest: +SKIP
"""

import os

import numpy as np

from emzoo.errors import EmzooError, describe

_TITLE_HEIGHT = 22
_MARGIN = 6
_MIN_CELL = 192


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _to_uint8(image):
    return (np.clip(np.asarray(image, np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _psnr(image, reference):
    mse = float(np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def centre_crop(image, size):
    """The central ``size`` x ``size`` window of ``image`` (the whole image when smaller)."""
    height, width = image.shape[:2]
    size_h, size_w = min(size, height), min(size, width)
    top, left = (height - size_h) // 2, (width - size_w) // 2
    return image[top:top + size_h, left:left + size_w]


def comparison_figure(path, panels, title=None, crop=256, error_scale=None):
    """Writes a PNG comparing reconstructions of one slice with its ground truth.

    Args:
        path: the PNG to write (written to a temporary name, then renamed).
        panels: ordered dict ``name -> (Y, X) float image in [0, 1]``; the first entry is the
            ground truth, the others are reconstructions of it.
        title: a line printed above the grid.
        crop: side of the central window shown (the same window for every panel).
        error_scale: absolute error shown as white (default: the 99.5th percentile of all
            error maps, at least 1/255).

    Returns:
        ``path``.
    """
    from PIL import Image, ImageDraw

    names = list(panels)
    if len(names) < 2:
        raise EmzooError(describe("A comparison figure needs a ground truth and a reconstruction.",
                                  "at least two panels", panels=names))
    images = {name: centre_crop(np.asarray(panels[name], np.float64), crop) for name in names}
    truth = images[names[0]]
    errors = {name: np.abs(images[name] - truth) for name in names[1:]}
    if error_scale is None:
        error_scale = max(float(np.percentile(np.concatenate([e.ravel() for e in errors.values()]), 99.5)),
                          1.0 / 255.0)
    height, width = truth.shape
    zoom = max(1, -(-_MIN_CELL // max(height, width)))
    cell_h, cell_w = height * zoom, width * zoom
    columns = len(names)
    header = _TITLE_HEIGHT + _MARGIN if title else 0
    canvas = Image.new("L", (columns * (cell_w + _MARGIN) + _MARGIN,
                             header + 2 * (cell_h + _TITLE_HEIGHT + _MARGIN) + _MARGIN), 255)
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    if title:
        draw.text((_MARGIN, _MARGIN), title, fill=0, font=font)

    def paste(array, column, row, label):
        x = _MARGIN + column * (cell_w + _MARGIN)
        y = header + _MARGIN + row * (cell_h + _TITLE_HEIGHT + _MARGIN)
        draw.text((x, y), label, fill=0, font=font)
        tile = Image.fromarray(_to_uint8(array)).resize((cell_w, cell_h), Image.NEAREST)
        canvas.paste(tile, (x, y + _TITLE_HEIGHT))

    paste(truth, 0, 0, names[0])
    for column, name in enumerate(names[1:], start=1):
        paste(images[name], column, 0, f"{name}  {_psnr(images[name], truth):.2f} dB")
        paste(errors[name] / error_scale, column, 1, f"|{name} - truth|")
    # Under the ground truth: the error scale (a ramp from 0 to error_scale).
    ramp = np.tile(np.linspace(0.0, 1.0, width)[None, :], (max(4, height // 6), 1))
    x, y = _MARGIN, header + _MARGIN + cell_h + _TITLE_HEIGHT + _MARGIN
    draw.text((x, y), "error scale (white =)", fill=0, font=font)
    bar = Image.fromarray(_to_uint8(ramp)).resize((cell_w, max(4, height // 6) * zoom), Image.NEAREST)
    canvas.paste(bar, (x, y + _TITLE_HEIGHT))
    draw.text((x, y + _TITLE_HEIGHT + bar.height + 4),
              f"0 ... {error_scale * 255:.1f} / 255", fill=0, font=font)
    path = os.fspath(path)
    tmp = path + ".tmp.png"
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def figure_slice(kept, dropped, factor):
    """The dropped slice a figure shows: farthest from its kept neighbours, nearest the middle.

    Example:
        >>> figure_slice([0, 4, 8], [1, 2, 3, 5, 6, 7], 4)
        2
    """
    middle = (kept[0] + kept[-1]) / 2.0

    def rank(z):
        offset = (z - kept[0]) % factor
        return (-min(offset, factor - offset), abs(z - middle), z)

    return min(dropped, key=rank)
