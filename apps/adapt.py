"""``emzoo adapt MODEL --data STACK -o DIR (--minutes M | --steps N) [--factor F | --isotropic]``.

Fine-tunes a copy of MODEL on the input volume itself (lateral triplets at the spacing each
recursion level of the factor bridges; see :mod:`emzoo.adaptation`) and writes it to DIR, which
``emzoo upscale STACK --model DIR`` and ``emzoo.load(DIR)`` use. The adapted weights replace the
base ones only if they score better on triplets held out from the adaptation.

DIR is also the run folder: it holds a checkpoint while the adaptation runs (every
``--checkpoint-every`` steps, at least every 30 s, and on Ctrl-C or SIGTERM), and becomes a
loadable model only when the run is complete. After an interruption (Ctrl-C, SIGTERM, a kill, a
power loss) the same command with ``--resume`` continues from the last checkpoint; time already
spent counts toward ``--minutes``. With ``--steps`` a resumed run ends with the weights an
uninterrupted one would have (same machine and software); with ``--minutes`` the number of steps
depends on the machine's speed, so no two runs are guaranteed the same weights.

Example:
    emzoo adapt default --data stack.tif -o runs/adapted --minutes 10 --factor 4
    emzoo adapt default --data stack.tif -o runs/adapted --minutes 10 --factor 4 --resume
    emzoo upscale stack.tif -o iso.tif --model runs/adapted --factor 4
"""

from absl import flags

from emzoo.apps import common

_DATA = flags.DEFINE_string("data", None, "The volume to adapt to (the one you will upscale).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the adapted model to.",
                              short_name="o")
_MINUTES = flags.DEFINE_float("minutes", None, "Wall-time budget in minutes.")
_STEPS = flags.DEFINE_integer("steps", None, "Optimizer-step budget.")
_FACTOR = flags.DEFINE_string("factor", None, "The upscaling factor you will use (default 2).")
_ISOTROPIC = flags.DEFINE_boolean("isotropic", False, "You will upscale to isotropic voxels.")
_VOXEL = flags.DEFINE_string("voxel-size", None, "Voxel size z,y,x in nm when the file lacks it "
                             "(without either, z spacing = factor x the x spacing is assumed).")
_OVERWRITE = common.define_overwrite_flag("Replace DIR if it holds a model or an interrupted "
                                         "adaptation (start again).")
_RESUME = flags.DEFINE_boolean("resume", False, "Continue the interrupted adaptation in DIR from "
                               "its last checkpoint (the same model, data, factor and budget).")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint-every", 100, "Steps between checkpoints "
                                         "(there is one at least every 30 s as well).")
_PRECISION = common.define_precision_flag(
    "auto", "What the training computes in: bf16 (mixed_bfloat16, float32 weights; faster, but "
    "some runs met a non-finite loss) or float32; auto: float32.")
_QUIET = flags.DEFINE_boolean("quiet", False, "No progress lines.")
flags.DEFINE_alias("voxel_size", "voxel-size")
flags.DEFINE_alias("checkpoint_every", "checkpoint-every")


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
    from emzoo import adaptation
    from emzoo.engine import parse_factor, parse_voxel_size

    factor = None if _FACTOR.value is None else parse_factor(_FACTOR.value)
    voxel = parse_voxel_size(_VOXEL.value) if _VOXEL.value else None
    report = adaptation.adapt(
        argv[1], _DATA.value, factor=factor, isotropic=_ISOTROPIC.value,
        minutes=_MINUTES.value, steps=_STEPS.value, output=_OUTPUT.value, voxel_size=voxel,
        overwrite=_OVERWRITE.value, resume=_RESUME.value,
        checkpoint_every=_CHECKPOINT_EVERY.value, precision=_PRECISION.value,
        progress=not _QUIET.value)   # Ctrl-C / SIGTERM: common.run_app says what is kept
    scores = ("" if report["validation_before"] is None else
              f", held-out error {report['validation_before']:.4f} -> "
              f"{report['validation_after']:.4f}")
    if report["already_complete"]:
        print(f"{report['output']} is already complete: {report['steps']} steps{scores}"
              + (f" ({report['skipped']})" if report["skipped"] else ""))
        return
    verdict = ("adapted weights kept" if report["improved"] else report["skipped"]
               or report["vetoed"] or "no gain on the held-out triplets: base weights kept")
    if report["diverged"]:
        verdict = f"{report['diverged']}; {verdict}"
    if report["assumed"]:
        verdict = f"{verdict}; {report['assumed']}"
    resumed = (f", resumed at step {', '.join(str(s) for s in report['resumed'])}"
               if report["resumed"] else "")
    print(f"Wrote {report['output']}: {report['steps']} steps in {report['seconds']:.0f} s"
          f"{resumed}{scores} ({verdict})")

