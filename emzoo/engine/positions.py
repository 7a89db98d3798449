"""Factor arithmetic: which output slices a factor asks for, and the dense grid they lie on.

Positions are exact fractions in input-slice units (z = 0 is the first input slice, z = 1 the
second), so whether a position falls on the dense grid is decided without rounding. The dense grid
of a factor ``F`` has ``P`` slices per input step, ``P`` the smallest power of two >= ``F``.

The factor is parsed and checked here, once, for the engine and for evaluation alike. Output
positions are computed on demand (:class:`Positions`), never listed, so a huge factor costs nothing
before the output size is checked.
"""

import collections.abc
import fractions
import math

from emzoo.errors import EmzooError, VolumeError, describe

_RESAMPLE_DENOMINATOR = 10_000  # factors are read as fractions with at most this denominator


def check_factor(factor):
    """``factor`` (a number >= 1, or its text) as an exact fraction; else an EmzooError.

    The fraction lets grid positions be computed without rounding. The error says what a factor
    must be: "Invalid value for argument `factor`. Expected a number >= 1. Received: factor=...".

    Example:
        >>> check_factor("2.5")
        Fraction(5, 2)
    """
    if isinstance(factor, bool):
        factor = None
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise EmzooError(describe("Invalid value for argument `factor`.", "a number >= 1",
                                  factor=factor)) from None
    if not math.isfinite(value) or value < 1:
        raise EmzooError(describe("Invalid value for argument `factor`.", "a number >= 1",
                                  factor=factor))
    return fractions.Fraction(value).limit_denominator(_RESAMPLE_DENOMINATOR)


def parse_factor(text):
    """A ``--factor`` value as a float >= 1, or an error saying what a factor must be.

    Example:
        >>> parse_factor("2.5")
        2.5
    """
    return float(check_factor(text))


class Positions(collections.abc.Sequence):
    """The output positions ``j / factor``, ``j = 0 .. count - 1``, computed when asked for.

    A read-only sequence of fractions (indexing, iteration, ``len``); ``count`` is the number of
    positions as a Python int, which stays usable where ``len()`` would overflow.

    Example:
        >>> Positions(fractions.Fraction(5, 2), 3)[1]
        Fraction(2, 5)
    """

    def __init__(self, factor, count):
        self.factor, self.count = fractions.Fraction(factor), int(count)

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[j] for j in range(*index.indices(self.count))]
        index = int(index)
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError("position index out of range")
        return fractions.Fraction(index) / self.factor

    def __eq__(self, other):
        if isinstance(other, Positions):
            return (self.factor, self.count) == (other.factor, other.count)
        if isinstance(other, (list, tuple)):
            return len(other) == self.count and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"Positions(factor={self.factor}, count={self.count})"


def upscale_positions(num_slices, factor):
    """Output slice positions (in input-slice units) and the dense power-of-two grid used.

    Returns ``(positions, grid)``: ``positions`` is a :class:`Positions` sequence of the fractions
    ``j / factor`` for ``j = 0 .. floor((num_slices - 1) * factor)`` (computed on demand);
    ``grid`` is the power of two ``P >= factor``.

    Example:
        >>> positions, grid = upscale_positions(3, 2.5)
        >>> [float(p) for p in positions], grid
        ([0.0, 0.4, 0.8, 1.2, 1.6, 2.0], 4)
    """
    factor = check_factor(factor)
    count = math.floor((num_slices - 1) * factor) + 1
    grid = 1 << max(0, math.ceil(math.log2(factor)))
    if grid // 2 >= factor:  # guard against float error in log2 for exact powers of two
        grid //= 2
    return Positions(factor, count), grid


def repair_positions(count):
    """Positions of ``count`` adjacent damaged slices between two good ones, and the grid used.

    Returns ``(positions, grid)``: the good slices sit at 0 and ``grid`` (the power of two
    ``P >= count + 1``), the damaged ones at ``k * grid / (count + 1)``, k = 1 .. count (dense-grid
    units, evenly spaced between the good slices).

    Example:
        >>> positions, grid = repair_positions(2)
        >>> [float(p) for p in positions], grid
        ([1.3333333333333333, 2.6666666666666665], 4)
    """
    grid = 1 << math.ceil(math.log2(count + 1))
    return [fractions.Fraction(k * grid, count + 1) for k in range(1, count + 1)], grid


def isotropic_factor(voxel):
    """z spacing / x spacing; errors (saying how to give one) when the voxel size is unknown.

    Example:
        >>> isotropic_factor((40.0, 4.0, 4.0))
        10.0
    """
    if voxel is None:
        raise VolumeError(describe(
            "`isotropic` needs the voxel size, and the input file does not record one.",
            "a voxel size given explicitly: `voxel_size`, z,y,x in nm (e.g. 40,4,4)",
            voxel_size=None))
    factor = voxel[0] / voxel[2]
    if factor < 1:
        raise VolumeError(describe(
            "The z spacing is already finer than the x spacing; nothing to upscale.",
            "a voxel size with z >= x", voxel_size=voxel))
    return factor


_MAX_RANGE = 1_000_000  # slices in one START-END range of parse_slices (no volume is longer)


def parse_slices(text):
    """Slice indices from ``"12,37,40-42"`` (0-based; ranges inclusive), sorted and unique.

    Example:
        >>> parse_slices("12, 37,40-42")
        [12, 37, 40, 41, 42]
    """
    indices = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part.lstrip("-"):
                start, end = (int(value) for value in part.split("-", 1))
            else:
                start = end = int(part)
        except ValueError:
            raise EmzooError(describe("Invalid value for argument `slices`.",
                                      "comma-separated slice indices or ranges, e.g. 12,37,40-42",
                                      slices=text)) from None
        if end - start >= _MAX_RANGE:
            raise EmzooError(describe(f"Invalid value for argument `slices`: range {part} is longer "
                                      "than any volume.", f"ranges of at most {_MAX_RANGE} slices",
                                      slices=text))
        if start > end:
            raise EmzooError(describe(f"Invalid value for argument `slices`: reversed range {part}.",
                                      "START-END with START <= END, e.g. 40-42", slices=text))
        indices.update(range(start, end + 1))
    if not indices:
        raise EmzooError(describe("Invalid value for argument `slices`.",
                                  "at least one slice index", slices=text))
    return sorted(indices)


def damaged_runs(slices, num_slices):
    """Maximal runs (first, last) of adjacent damaged slices, each with good slices on both sides."""
    if isinstance(slices, str):
        slices = parse_slices(slices)
    try:
        indices = sorted({int(z) for z in slices})
    except (TypeError, ValueError):
        raise EmzooError(describe("Invalid value for argument `slices`.", "integer slice indices",
                                  slices=slices)) from None
    if not indices:
        raise EmzooError(describe("Invalid value for argument `slices`.",
                                  "at least one slice index", slices=slices))
    bad = [z for z in indices if not 0 <= z < num_slices]
    if bad:
        raise EmzooError(describe("Slice indices outside the volume.",
                                  f"0-based indices from 0 to {num_slices - 1}", slices=bad))
    runs = []
    for z in indices:
        if runs and z == runs[-1][1] + 1:
            runs[-1][1] = z
        else:
            runs.append([z, z])
    for first, last in runs:
        if first == 0 or last == num_slices - 1:
            raise EmzooError(describe(
                f"Cannot repair slice(s) {first}..{last}: interpolation needs a good slice on both "
                "sides, and this run touches the end of the volume.",
                f"damaged slices between 1 and {num_slices - 2}", slices=indices))
    return [tuple(run) for run in runs]
