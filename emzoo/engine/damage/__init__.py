"""Damage in real sections: found from the stack's own statistics, repaired only where it is.

- :mod:`~emzoo.engine.damage.detect`: :func:`find_damage` (whole-slice and partial defects, a
  JSON report and a mask volume with one label per kind), from the whole-slice statistics it
  computes and the partial-damage scores of :mod:`~emzoo.engine.damage.regions` (the working
  grid, region scores and labelled regions; the mask labels :data:`KINDS`);
- :mod:`~emzoo.engine.damage.masked`: :func:`repair_masked` (only the masked pixels, from the
  nearest good slices at each place, feathered into the intact surroundings);
- :mod:`~emzoo.engine.damage.pipeline`: :func:`repair_damage` (one ``emzoo repair --detect`` /
  ``--mask`` request: find and/or take a mask, then repair).

Example:
    >>> report = find_damage("stack.tif")                                    # doctest: +SKIP
    >>> [(f["slice"], f["kind"]) for f in report.findings]                  # doctest: +SKIP
    [(12, 'blank'), (40, 'dark')]
    >>> fixed = repair_masked("stack.tif", report.mask, "default")["array"]  # doctest: +SKIP
"""

from emzoo.engine.damage.detect import DamageReport, find_damage
from emzoo.engine.damage.masked import repair_masked
from emzoo.engine.damage.pipeline import repair_damage
from emzoo.engine.damage.regions import KINDS, WHOLE_SLICE_KINDS

__all__ = ["KINDS", "WHOLE_SLICE_KINDS", "DamageReport", "find_damage", "repair_masked",
           "repair_damage"]
