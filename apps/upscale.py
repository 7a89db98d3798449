"""``emzoo upscale INPUT -o OUTPUT``: upscales a volume along z with a named (or saved) model.

INPUT is a TIFF, ``file.h5:/dataset`` or a folder of slices; the word ``sample`` means the bundled
FIB-SEM sample (``emzoo.samples``). The output keeps the input dtype and records the new voxel
size. ``--factor`` takes any number >= 1 (powers of two are pure recursive interpolation; other
factors are resampled linearly from the next power of two); ``--isotropic`` makes the z spacing
equal to the x spacing (from the file, or from ``--voxel-size``). See :mod:`emzoo.engine`.

Example:
    emzoo upscale sample -o out.tif --factor 4
    emzoo upscale stack.tif -o iso.tif --model film-ft-em --isotropic --voxel-size 40,4,4 \\
        --tile 1024 --overlap 64
"""

from absl import flags

from emzoo.apps import common

_OUTPUT = flags.DEFINE_string("output", None, "Where to write the result (.tif, .h5[:/dataset] or "
                              "a folder).", short_name="o")
_FACTOR = flags.DEFINE_string("factor", None, "Upscaling factor along z, a number >= 1 "
                              "(default 2).")
_ISOTROPIC = flags.DEFINE_boolean("isotropic", False, "Make the z spacing equal to the x spacing "
                                  "(needs a voxel size in the file, or --voxel-size).")
_SHARED = common.define_volume_flags()


def main(argv):
    from emzoo import engine, samples
    from emzoo.errors import EmzooError, describe

    common.prepare_volume_app()
    if len(argv) != 2:
        raise EmzooError(describe("emzoo upscale takes one input volume.",
                                  "emzoo upscale INPUT -o OUTPUT [--factor F | --isotropic]",
                                  arguments=argv[1:]))
    if not _OUTPUT.value:
        raise EmzooError(describe("No output given.", "-o OUTPUT (e.g. -o out.tif)", output=None))
    if _ISOTROPIC.value and _FACTOR.value is not None:
        raise EmzooError(describe("--factor and --isotropic exclude each other.",
                                  "one of them", factor=_FACTOR.value, isotropic=True))
    factor = engine.parse_factor(_FACTOR.value if _FACTOR.value is not None else 2)
    options = common.volume_job_options(_SHARED)
    model = common.job_model(_SHARED.model.value, _SHARED.random_weights.value)
    summary = engine.upscale_volume(
        samples.resolve_input(argv[1]), model, factor=factor, output=_OUTPUT.value,
        isotropic=_ISOTROPIC.value, **options)
    shape = " x ".join(str(s) for s in summary["output_shape"])
    voxel = summary["voxel_size"]
    voxel = "unknown voxel size" if voxel is None else "voxel " + " x ".join(
        f"{v:g}" for v in voxel) + " nm"
    print(f"Wrote {summary['output']}: {shape} {summary['dtype']}, {voxel} "
          f"(x{summary['factor']:g} with model {_SHARED.model.value}, {summary['seconds']:.1f} s)")
