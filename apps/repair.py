"""``emzoo repair INPUT -o OUTPUT --slices 12,37``: replaces damaged slices by interpolation.

Each listed slice (0-based; ranges like ``40-42`` allowed) is replaced by interpolating between
the nearest good slices on both sides; runs of adjacent damaged slices get evenly spaced
positions between their good neighbours (see :func:`emzoo.upscale.repair_volume`). All other
slices are copied unchanged; dtype and voxel size are kept. INPUT ``sample`` means the bundled
sample.

Example:
    emzoo repair stack.tif -o fixed.tif --slices 12,37,40-42 --model default
"""

from absl import flags

_OUTPUT = flags.DEFINE_string("output", None, "Where to write the repaired volume.", short_name="o")
_SLICES = flags.DEFINE_string("slices", None, "Damaged slices, 0-based: e.g. 12,37,40-42.")
_MODEL = flags.DEFINE_string("model", "default", "A registered model name (`emzoo list`) or a "
                             "folder written by `emzoo train` / emzoo.save.")
_VOXEL = flags.DEFINE_string("voxel-size", None, "Voxel size z,y,x in nm, replacing the file's.")
_TILE = flags.DEFINE_integer("tile", None, "Process slices larger than TILE pixels in overlapping "
                             "tiles.")
_OVERLAP = flags.DEFINE_integer("overlap", 32, "Overlap of neighbouring tiles in pixels.")
_BATCH = flags.DEFINE_integer("batch-size", None, "Slice pairs (or tiles) per model call "
                              "(default: 4 with a GPU, 1 on CPU).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace OUTPUT if it exists.")
_QUIET = flags.DEFINE_boolean("quiet", False, "No progress bar.")
flags.DEFINE_alias("voxel_size", "voxel-size")
flags.DEFINE_alias("batch_size", "batch-size")


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    import logging
    import signal

    from emzoo import samples, upscale
    from emzoo.errors import EmzooError, describe

    # A damaged file is reported as one error line; the reader's own warnings would add more.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    # `kill` (SIGTERM) unwinds like Ctrl-C, so the temporary output is removed, not left behind.
    signal.signal(signal.SIGTERM, _terminate)
    if len(argv) != 2:
        raise EmzooError(describe("emzoo repair takes one input volume.",
                                  "emzoo repair INPUT -o OUTPUT --slices 12,37", arguments=argv[1:]))
    if not _OUTPUT.value:
        raise EmzooError(describe("No output given.", "-o OUTPUT (e.g. -o fixed.tif)", output=None))
    if not _SLICES.value:
        raise EmzooError(describe("No damaged slices given.", "--slices 12,37 (0-based)",
                                  slices=None))
    slices = upscale.parse_slices(_SLICES.value)
    voxel_size = upscale.parse_voxel_size(_VOXEL.value) if _VOXEL.value else None
    summary = upscale.repair_volume(
        samples.resolve_input(argv[1]), slices, _MODEL.value, output=_OUTPUT.value,
        tile=_TILE.value, overlap=_OVERLAP.value, batch_size=_BATCH.value, voxel_size=voxel_size,
        overwrite=_OVERWRITE.value, progress=not _QUIET.value)
    repaired = ",".join(str(z) for z in summary["repaired"])
    print(f"Wrote {summary['output']}: repaired slice(s) {repaired} with model {_MODEL.value} "
          f"({summary['seconds']:.1f} s)")
