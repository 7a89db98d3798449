"""``emzoo prepare INPUT[,INPUT...] -o OUT_DIR``: cut aligned cremi_triplet tiles from EM volumes.

Aligns consecutive slices by template matching, cuts ``--size`` tiles at ``--stride``, drops defective
or discontinuous triplets, histogram-specifies, splits 3:1:1 by z and writes FILM TFRecords or HDF5
(see :mod:`emzoo.data.prepare`).

Example:
    emzoo prepare sample_A.hdf,sample_B.hdf,sample_C.hdf -o cremi_triplet --format tfrecord
"""

from absl import flags

from emzoo.apps import common

_OUTPUT = flags.DEFINE_string("output", None, "Output folder (created; must not exist unless --overwrite).",
                              short_name="o")
_FORMAT = flags.DEFINE_enum("format", "tfrecord", ["tfrecord", "hdf5"], "FILM TFRecords or HDF5 triplets.")
_SIZE = flags.DEFINE_integer("size", 512, "Tile size in pixels.")
_STRIDE = flags.DEFINE_integer("stride", 512, "Tile stride in pixels.")
_SPLIT = flags.DEFINE_string("split", "3,1,1", "Train,validation,test weights over each volume's z-range.")
_MAX_SHIFT = flags.DEFINE_integer("max_shift", 32, "Largest shift (pixels) searched between consecutive slices.")
_MIN_NCC = flags.DEFINE_float("min_ncc", 0.1, "Drop triplets whose middle frame correlates less than this "
                              "with a neighbour (NCC of 4x4 block means).")
_MAX_BLANK = flags.DEFINE_float("max_blank_fraction", 0.05, "Drop triplets with more than this fraction of "
                                "pixels at the dtype's extremes (blank or saturated).")
_HISTOGRAM = flags.DEFINE_boolean("histogram", True, "Histogram-specify every slice to the reference.")
_REFERENCE = flags.DEFINE_string("reference", None, "Volume whose middle slice is the histogram reference "
                                 "(default: the middle slice of the first input).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace an existing output folder.")
_QUIET = flags.DEFINE_boolean("quiet", False, "Print only the final counts.")


def main(argv):
    from emzoo.data.prepare import prepare_triplets
    from emzoo.errors import EmzooError, describe

    inputs = [part for arg in argv[1:] for part in arg.split(",") if part]
    if not inputs:
        raise EmzooError(describe("No input volumes were given.", "emzoo prepare INPUT[,INPUT...] -o OUT_DIR",
                                  inputs=argv[1:]))
    if not _OUTPUT.value:
        raise EmzooError(describe("No output folder was given.", "-o OUT_DIR", output=None))
    common.check_output_flag(_OUTPUT.value, _OVERWRITE.value)  # before any work
    summary = prepare_triplets(inputs, _OUTPUT.value, format=_FORMAT.value, size=_SIZE.value,
                               stride=_STRIDE.value, split=_SPLIT.value, max_shift=_MAX_SHIFT.value,
                               min_ncc=_MIN_NCC.value, max_blank_fraction=_MAX_BLANK.value,
                               histogram=_HISTOGRAM.value, reference=_REFERENCE.value,
                               overwrite=_OVERWRITE.value, progress=None if _QUIET.value else print)
    counts = ", ".join(f"{name} {count}" for name, count in summary["counts"].items())
    dropped = ", ".join(f"{reason} {count}" for reason, count in summary["dropped"].items())
    print(f"wrote {_OUTPUT.value}: {counts} triplets (dropped: {dropped})")
