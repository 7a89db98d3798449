"""Comparison figures for ``emzoo evaluate``: reconstructions and their error maps side by side.

Drawn with Pillow (a dependency already), so no plotting library is needed. Layout::

    ground truth | linear | cubic | model        <- the same crop of one dropped slice
    error scale  | |linear - gt| | |cubic - gt| | |model - gt|   <- one shared heat scale

Each title carries the method's PSNR on the shown window; the error maps share one scale (the
colour bar under the ground truth), drawn in a black-red-yellow-white heat map so they cannot be
mistaken for images: the darker map is the better reconstruction. EM images are noisy, so the
raw per-pixel error looks like static; the maps show it lightly smoothed (Gaussian, sigma
``error_sigma`` pixels, 2 by default, 0 for raw) so where the errors concentrate (moved membranes,
missed organelles) stands out from the noise floor.

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
# Heat map anchors (value in [0, 1] -> RGB): black, dark red, red, orange, yellow, white.
_HEAT = ((0.0, (0, 0, 0)), (0.25, (110, 0, 20)), (0.5, (215, 30, 10)), (0.7, (250, 130, 0)),
         (0.88, (255, 225, 40)), (1.0, (255, 255, 255)))


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _to_uint8(image):
    return (np.clip(np.asarray(image, np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _heat(values):
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours of the heat map."""
    values = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    stops = np.array([stop for stop, _ in _HEAT])
    colours = np.array([colour for _, colour in _HEAT], np.float64)
    rgb = np.stack([np.interp(values, stops, colours[:, c]) for c in range(3)], axis=-1)
    return (rgb + 0.5).astype(np.uint8)


def _gaussian_blur(image, sigma):
    """Separable Gaussian smoothing with edge replication (NumPy only)."""
    if not sigma:
        return image
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="edge")
    rows = sum(w * padded[radius + o:radius + o + image.shape[0], :] for o, w in zip(offsets, kernel))
    return sum(w * rows[:, radius + o:radius + o + image.shape[1]] for o, w in zip(offsets, kernel))


def _short_name(name):
    """A method's label: folders and files by their base name (``runs/film-em/`` -> ``film-em``)."""
    text = str(name).rstrip("/" + os.sep)
    return os.path.basename(text) if os.sep in text or "/" in text else text


def _fit(draw, text, font, width):
    """``text``, shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _psnr(image, reference):
    mse = float(np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def centre_crop(image, size):
    """The central ``size`` x ``size`` window of ``image`` (the whole image when smaller)."""
    height, width = image.shape[:2]
    size_h, size_w = min(size, height), min(size, width)
    top, left = (height - size_h) // 2, (width - size_w) // 2
    return image[top:top + size_h, left:left + size_w]


def comparison_figure(path, panels, title=None, crop=256, error_scale=None, error_sigma=2.0):
    """Writes a PNG comparing reconstructions of one slice with its ground truth.

    Args:
        path: the PNG to write (written to a temporary name, then renamed).
        panels: ordered dict ``name -> (Y, X) float image in [0, 1]``; the first entry is the
            ground truth, the others are reconstructions of it (names that are paths are shown
            by their base name).
        title: a line printed above the grid.
        crop: side of the central window shown (the same window for every panel).
        error_scale: absolute error shown as white (default: the 99.5th percentile of all
            shown error maps, at least 1/255).
        error_sigma: Gaussian smoothing of the error maps in pixels (0: raw per-pixel errors).
            PSNRs in the titles are always computed from the unsmoothed images.

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
    errors = {name: _gaussian_blur(np.abs(images[name] - truth), error_sigma) for name in names[1:]}
    if error_scale is None:
        error_scale = max(float(np.percentile(np.concatenate([e.ravel() for e in errors.values()]), 99.5)),
                          1.0 / 255.0)
    height, width = truth.shape
    zoom = max(1, -(-_MIN_CELL // max(height, width)))
    cell_h, cell_w = height * zoom, width * zoom
    columns = len(names)
    header = 2 * _TITLE_HEIGHT + _MARGIN if title else _TITLE_HEIGHT
    canvas = Image.new("RGB", (columns * (cell_w + _MARGIN) + _MARGIN,
                               header + 2 * (cell_h + _TITLE_HEIGHT + _MARGIN) + _MARGIN), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    small = _font(12)
    full_width = canvas.width - 2 * _MARGIN
    if title:
        draw.text((_MARGIN, _MARGIN), _fit(draw, title, font, full_width), fill="black", font=font)
    smoothing = f", errors smoothed (Gaussian sigma {error_sigma:g} px)" if error_sigma else ""
    note = f"central {width}x{height} window; dB = PSNR of this window{smoothing}"
    draw.text((_MARGIN, _MARGIN + (_TITLE_HEIGHT if title else 0)), _fit(draw, note, small, full_width),
              fill=(90, 90, 90), font=small)

    def paste(tile, column, row, label):
        x = _MARGIN + column * (cell_w + _MARGIN)
        y = header + _MARGIN + row * (cell_h + _TITLE_HEIGHT + _MARGIN)
        draw.text((x, y), _fit(draw, label, font, cell_w), fill="black", font=font)
        canvas.paste(tile.resize((cell_w, cell_h), Image.NEAREST), (x, y + _TITLE_HEIGHT))

    def grey(array):
        return Image.fromarray(_to_uint8(array)).convert("RGB")

    paste(grey(truth), 0, 0, _short_name(names[0]))
    for column, name in enumerate(names[1:], start=1):
        label = _short_name(name)
        paste(grey(images[name]), column, 0, f"{label}  {_psnr(images[name], truth):.2f} dB")
        paste(Image.fromarray(_heat(errors[name] / error_scale)), column, 1, f"|{label} - truth|")
    # Under the ground truth: the colour bar of the error maps, 0 ... error_scale.
    bar_height = max(12, cell_h // 8)
    x, y = _MARGIN, header + _MARGIN + cell_h + _TITLE_HEIGHT + _MARGIN
    draw.text((x, y), "absolute error", fill="black", font=font)
    ramp = np.tile(np.linspace(0.0, 1.0, cell_w)[None, :], (bar_height, 1))
    canvas.paste(Image.fromarray(_heat(ramp)), (x, y + _TITLE_HEIGHT))
    below = y + _TITLE_HEIGHT + bar_height + 4
    draw.text((x, below), "0", fill="black", font=font)
    top_label = f"{error_scale * 255:.1f} / 255"
    draw.text((x + cell_w - draw.textlength(top_label, font=font), below), top_label, fill="black", font=font)
    draw.text((x, below + _TITLE_HEIGHT), _fit(draw, "darker = closer to the truth", small, cell_w),
              fill=(90, 90, 90), font=small)
    from emzoo.atomic import atomic_path

    path = os.fspath(path)
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
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
