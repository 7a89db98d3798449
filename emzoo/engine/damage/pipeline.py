"""One request of ``emzoo repair --detect`` / ``--mask``: find, then repair the masked pixels.

Example:
    >>> done = repair_damage("stack.tif", "default", "fixed.tif",
    ...                      report="found.json")                    # doctest: +SKIP
"""

import os

import numpy as np

from emzoo.engine.damage.detect import find_damage
from emzoo.engine.damage.masked import check_band, check_blend, check_mask_shape, repair_masked
from emzoo.engine.sources import check_output, open_source
from emzoo.errors import EmzooError, describe


def repair_damage(volume, model, output=None, detect=True, mask=None, dry_run=False,
                  save_mask=None, report=None, sensitivity=1.0, band=4, blend="feather",
                  overwrite=False, **options):
    """Finds damage and/or takes a mask, then repairs the masked pixels: one call per request.

    ``detect`` runs :func:`find_damage` (its mask written to ``save_mask`` and its report to
    ``report`` as JSON when given); ``mask`` is a mask volume (non-zero = damaged), e.g. a saved
    detected mask edited by hand. With both, the union is repaired. ``dry_run`` only finds and
    reports (no ``output``). Everything that can be checked is checked before any work.

    Args:
        volume: a path, a NumPy array (Z, Y, X) or a Volume.
        model: as in :func:`repair_masked`.
        output: where to write the repaired volume (``None``: returned as ``array``).
        band, blend: as in :func:`repair_masked`.
        options: keyword arguments of :func:`repair_masked` (tile, overlap, batch_size,
            voxel_size, progress, jit_compile, precision, allow_incomplete, chunks, cancel).

    Returns:
        A dict: ``findings`` (``None`` without ``detect``), ``damaged_slices``, ``report`` and
        ``mask_path`` (the paths written, or ``None``), and, unless ``dry_run``, the summary of
        :func:`repair_masked` under ``repair``.

    Example:
        >>> done = repair_damage("stack.tif", "default", "fixed.tif",
        ...                      report="found.json")                  # doctest: +SKIP
    """
    if not detect and mask is None:
        raise EmzooError(describe("Nothing marks the damage.", "detect=True, a mask, or both",
                                  detect=detect, mask=mask))
    if dry_run and not detect:
        raise EmzooError(describe("A dry run only reports what detection finds.",
                                  "detect=True with dry_run=True", detect=detect))
    for path in (report, save_mask) + (() if dry_run else (output,)):
        if path is not None:
            check_output(path, overwrite, volume)  # none of them may be the input
    check_band(band)
    check_blend(blend)
    found, combined = None, None
    if mask is not None:
        source = open_source(volume, options.get("allow_incomplete", False))
        combined = check_mask_shape(mask, source.shape)
    if detect:
        found = find_damage(volume, sensitivity=sensitivity, mask_output=save_mask,
                            overwrite=overwrite, cancel=options.get("cancel"))
        if report is not None:
            found.save(report)
        combined = found.mask if combined is None else _union(found.mask, combined)
    result = {"findings": None if found is None else found.findings,
              "damaged_slices": None if found is None else found.damaged_slices,
              "report": None if report is None else os.fspath(report),
              "mask_path": None if save_mask is None else os.fspath(save_mask)}
    if not dry_run:
        result["repair"] = repair_masked(volume, combined, model, output=output, band=band,
                                         blend=blend, overwrite=overwrite, **options)
    return result


def _union(detected, masks):
    """The detected mask where it marks damage, else the given mask's labels (as uint8 > 0)."""
    out = np.array(detected, np.uint8, copy=True)
    for z in range(out.shape[0]):
        given = np.asarray(masks.read(z)) != 0
        out[z][given & (out[z] == 0)] = 255
    return out
