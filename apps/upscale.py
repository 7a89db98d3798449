"""``emzoo upscale INPUT -o OUTPUT``: upscales a volume along z with a named (or saved) model.

INPUT is a TIFF, ``file.h5:/dataset`` or a folder of slices; the word ``sample`` means the bundled
FIB-SEM sample (``emzoo.samples``). The output keeps the input dtype and records the new voxel
size. ``--factor`` takes any number >= 1 (powers of two are pure recursive interpolation; other
factors are resampled linearly from the next power of two); ``--isotropic`` makes the z spacing
equal to the x spacing (from the file, or from ``--voxel-size``). See :mod:`emzoo.upscale`.

Example:
    emzoo upscale sample -o out.tif --factor 4
    emzoo upscale stack.tif -o iso.tif --model film-ft-em --isotropic --voxel-size 40,4,4 \\
        --tile 1024 --overlap 64
"""

from absl import flags

_OUTPUT = flags.DEFINE_string("output", None, "Where to write the result (.tif, .h5[:/dataset] or "
                              "a folder).", short_name="o")
_MODEL = flags.DEFINE_string("model", "default", "A registered model name (`emzoo list`) or a "
                             "folder written by `emzoo train` / emzoo.save.")
_FACTOR = flags.DEFINE_string("factor", None, "Upscaling factor along z, a number >= 1 "
                              "(default 2).")
_ISOTROPIC = flags.DEFINE_boolean("isotropic", False, "Make the z spacing equal to the x spacing "
                                  "(needs a voxel size in the file, or --voxel-size).")
_VOXEL = flags.DEFINE_string("voxel-size", None, "Voxel size z,y,x in nm, replacing the file's "
                             "(e.g. 40,4,4).")
_TILE = flags.DEFINE_integer("tile", None, "Process slices larger than TILE pixels in overlapping "
                             "tiles (saves memory on large slices).")
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
        raise EmzooError(describe("emzoo upscale takes one input volume.",
                                  "emzoo upscale INPUT -o OUTPUT [--factor F | --isotropic]",
                                  arguments=argv[1:]))
    if not _OUTPUT.value:
        raise EmzooError(describe("No output given.", "-o OUTPUT (e.g. -o out.tif)", output=None))
    if _ISOTROPIC.value and _FACTOR.value is not None:
        raise EmzooError(describe("--factor and --isotropic exclude each other.",
                                  "one of them", factor=_FACTOR.value, isotropic=True))
    factor = upscale.parse_factor(_FACTOR.value if _FACTOR.value is not None else 2)
    voxel_size = upscale.parse_voxel_size(_VOXEL.value) if _VOXEL.value else None
    source = samples.resolve_input(argv[1])
    summary = upscale.upscale_volume(
        source, _MODEL.value, factor=factor, output=_OUTPUT.value, isotropic=_ISOTROPIC.value,
        tile=_TILE.value, overlap=_OVERLAP.value, batch_size=_BATCH.value, voxel_size=voxel_size,
        overwrite=_OVERWRITE.value, progress=not _QUIET.value)
    shape = " x ".join(str(s) for s in summary["output_shape"])
    voxel = summary["voxel_size"]
    voxel = "unknown voxel size" if voxel is None else "voxel " + " x ".join(
        f"{v:g}" for v in voxel) + " nm"
    print(f"Wrote {summary['output']}: {shape} {summary['dtype']}, {voxel} "
          f"(x{summary['factor']:g} with model {_MODEL.value}, {summary['seconds']:.1f} s)")
