"""``emzoo upscale INPUT -o OUTPUT``: upscales a volume along z with a named (or saved) model.

INPUT is a TIFF, ``file.h5:/dataset`` or a folder of slices; the word ``sample`` means the bundled
FIB-SEM sample (``emzoo.samples``). The output keeps the input dtype and records the new voxel
size. ``--factor`` takes any number >= 1 (powers of two are pure recursive interpolation; other
factors are resampled linearly from the next power of two); ``--isotropic`` makes the z spacing
equal to the x spacing (from the file, or from ``--voxel-size``). See :mod:`emzoo.engine`.
``--model flow`` is the optical-flow baseline (no weights; needs ``emzoo[flow]``); ``--adapt M``
first fine-tunes the model on this volume for M minutes (:mod:`emzoo.adaptation`) in the folder
``OUTPUT.adapted`` beside the output, kept as a loadable model (``--model OUTPUT.adapted``): the
same command run again after a crash or a kill continues that adaptation, or reuses it when it
was complete, and ``--overwrite`` adapts again.

Before the job, the model is weighed against linear interpolation on the input itself (a few of
its slices dropped and predicted from their neighbours; :mod:`emzoo.engine.calibration`): where
this volume shows the model doing worse than linear, its new slices lean towards linear, and the
last line says by how much; ``--nocalibrate`` uses the model's slices as they are.

``--workers N`` runs blockwise on a local Dask cluster of N worker processes (``--scheduler
ADDRESS`` on an existing one) and writes a Zarr, OME-Zarr or N5 output in place; ``--resume``
continues such a job after a crash, redoing only the blocks not recorded as finished. An
unfinished output is refused as an input without ``--allow-incomplete``. See
:mod:`emzoo.engine.distributed`.

Example:
    emzoo upscale sample -o out.tif --factor 4
    emzoo upscale stack.tif -o iso.tif --model film-ft-em --isotropic --voxel-size 40,4,4 \\
        --tile 1024 --overlap 64
    emzoo upscale stack.tif -o iso.tif --factor 4 --adapt 10
    emzoo upscale in.ome.zarr -o out.ome.zarr --factor 4 --workers 8
    emzoo upscale in.ome.zarr -o out.ome.zarr --factor 4 --workers 8 --resume
"""

import dataclasses

from absl import flags

from emzoo.apps import common

_OUTPUT = flags.DEFINE_string("output", None, "Where to write the result (.tif, .h5[:/dataset], "
                              ".zarr, .ome.zarr, .n5 or a folder).", short_name="o")
_FACTOR = flags.DEFINE_string("factor", None, "Upscaling factor along z, a number >= 1 "
                              "(default 2).")
_ISOTROPIC = flags.DEFINE_boolean("isotropic", False, "Make the z spacing equal to the x spacing "
                                  "(needs a voxel size in the file, or --voxel-size).")
_ADAPT = flags.DEFINE_float("adapt", None, "First adapt the model to this volume for ADAPT "
                            "minutes (self-supervised, on the CPU by default; see `emzoo adapt`), "
                            "in the folder OUTPUT.adapted, which the same command run again "
                            "continues or reuses (--overwrite adapts again). Only for a z "
                            "spacing 3-6x the x spacing; elsewhere the model is kept as it is.")
_CALIBRATE = flags.DEFINE_boolean("calibrate", True, "First weigh the model against linear "
                                  "interpolation on this volume (a few extra model calls): "
                                  "where the volume shows the model doing worse than linear, "
                                  "its new slices lean towards linear. --nocalibrate uses the "
                                  "model's slices as they are.")
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
    if _ADAPT.value is not None and (_ADAPT.value <= 0 or _SHARED.model.value == "flow"):
        raise EmzooError(describe("Invalid value for --adapt.", "a number of minutes > 0, with a "
                                  "trained model (not flow)", adapt=_ADAPT.value,
                                  model=_SHARED.model.value))
    job = common.volume_job(_SHARED)
    job["options"] = dataclasses.replace(job["options"], calibrate=_CALIBRATE.value)
    source = samples.resolve_input(argv[1])
    plan = engine.plan_upscale(source, _FACTOR.value, _OUTPUT.value, isotropic=_ISOTROPIC.value,
                               **job)  # everything checked once, before the model is loaded
    model = common.job_model(_SHARED.model.value, _SHARED.random_weights.value, plan.options)
    adapted = ""
    if _ADAPT.value is not None:
        from emzoo.adaptation import adapt_beside_output, describe_report

        report = adapt_beside_output(
            model, source, _OUTPUT.value, overwrite=plan.overwrite,
            factor=None if _ISOTROPIC.value else float(plan.factor), isotropic=_ISOTROPIC.value,
            minutes=_ADAPT.value, voxel_size=job["voxel_size"], precision=plan.options.precision,
            progress=not _SHARED.quiet.value)
        model, adapted = report["model"], ", " + describe_report(report)
    result = engine.run(plan, model, progress=not _SHARED.quiet.value).to_dict()
    scales = result.get("residual_scales")
    leaning = "" if not scales or min(scales) == 1.0 else (
        ", weight of the model against linear per level " + "/".join(f"{w:.2f}" for w in scales))
    print(common.job_summary(result, f"x{result['factor']:g} with model "
                                     f"{_SHARED.model.value}{adapted}{leaning}"))
