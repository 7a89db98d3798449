"""``emzoo adapt MODEL --data STACK -o DIR (--minutes M | --steps N) [--factor F | --isotropic]``.

Fine-tunes a copy of MODEL on the input volume itself (lateral triplets at the spacing each
recursion level of the factor bridges; see :mod:`emzoo.adaptation`) and writes it to DIR, which
``emzoo upscale STACK --model DIR`` and ``emzoo.load(DIR)`` use. The adapted weights replace the
base ones only if they score better on triplets held out from the adaptation.

Example:
    emzoo adapt default --data stack.tif -o runs/adapted --minutes 10 --factor 4
    emzoo upscale stack.tif -o iso.tif --model runs/adapted --factor 4
"""

from absl import flags

_DATA = flags.DEFINE_string("data", None, "The volume to adapt to (the one you will upscale).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the adapted model to.",
                              short_name="o")
_MINUTES = flags.DEFINE_float("minutes", None, "Wall-time budget in minutes.")
_STEPS = flags.DEFINE_integer("steps", None, "Optimizer-step budget.")
_FACTOR = flags.DEFINE_string("factor", None, "The upscaling factor you will use (default 2).")
_ISOTROPIC = flags.DEFINE_boolean("isotropic", False, "You will upscale to isotropic voxels.")
_VOXEL = flags.DEFINE_string("voxel-size", None, "Voxel size z,y,x in nm when the file lacks it.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace DIR if it holds a model.")
_QUIET = flags.DEFINE_boolean("quiet", False, "No progress lines.")
flags.DEFINE_alias("voxel_size", "voxel-size")


def main(argv):
    from emzoo.errors import EmzooError, describe

    if len(argv) != 2:
        raise EmzooError(describe("emzoo adapt takes one model.",
                                  "emzoo adapt MODEL --data STACK -o DIR --minutes M",
                                  arguments=argv[1:]))
    if not _DATA.value or not _OUTPUT.value:
        raise EmzooError(describe("emzoo adapt needs --data and -o.",
                                  "--data STACK -o DIR", data=_DATA.value, output=_OUTPUT.value))
    if _ISOTROPIC.value and _FACTOR.value is not None:
        raise EmzooError(describe("--factor and --isotropic exclude each other.", "one of them",
                                  factor=_FACTOR.value, isotropic=True))
    from emzoo.adaptation import adapt
    from emzoo.engine import parse_factor, parse_voxel_size

    factor = None if _FACTOR.value is None else parse_factor(_FACTOR.value)
    voxel = parse_voxel_size(_VOXEL.value) if _VOXEL.value else None
    report = adapt(argv[1], _DATA.value, factor=factor, isotropic=_ISOTROPIC.value,
                   minutes=_MINUTES.value, steps=_STEPS.value, output=_OUTPUT.value,
                   voxel_size=voxel, overwrite=_OVERWRITE.value, progress=not _QUIET.value)
    verdict = ("adapted weights kept" if report["improved"]
               else "no gain on the held-out triplets: base weights kept")
    print(f"Wrote {report['output']}: {report['steps']} steps in {report['seconds']:.0f} s, "
          f"held-out error {report['validation_before']:.4f} -> {report['validation_after']:.4f} "
          f"({verdict})")
