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
    common.check_volume_flags(_SHARED, _OUTPUT.value)  # before TensorFlow is imported
    options = common.volume_job_options(_SHARED)
    if _ADAPT.value is not None and (_ADAPT.value <= 0 or _SHARED.model.value == "flow"):
        raise EmzooError(describe("Invalid value for --adapt.", "a number of minutes > 0, with a "
                                  "trained model (not flow)", adapt=_ADAPT.value,
                                  model=_SHARED.model.value))
    source = samples.resolve_input(argv[1])
    from emzoo.engine.upscale import plan_upscale

    if options["workers"] is not None or options["scheduler"] is not None:
        from emzoo.engine.distributed import check_request

        check_request(source, _OUTPUT.value, options["workers"], options["scheduler"],
                      options["resume"], options["overwrite"])
    plan_upscale(source, factor, _OUTPUT.value, _ISOTROPIC.value, options["voxel_size"],
                 options["overwrite"] or options["resume"], False, options["allow_incomplete"],
                 options["chunks"])  # input, output and its size, before the model is loaded
    model = common.job_model(_SHARED.model.value, _SHARED.random_weights.value)
    adapted = ""
    if _ADAPT.value is not None:
        from emzoo.adaptation import adapt_beside_output, folder_beside, run_state

        folder = folder_beside(_OUTPUT.value)
        try:
            report = adapt_beside_output(
                model, source, _OUTPUT.value, overwrite=options["overwrite"],
                factor=None if _ISOTROPIC.value else factor, isotropic=_ISOTROPIC.value,
                minutes=_ADAPT.value, voxel_size=options["voxel_size"],
                precision=options["precision"], progress=options["progress"])
        except KeyboardInterrupt as stop:   # Ctrl-C / SIGTERM while adapting: say what is kept
            state = run_state(folder)
            if state is not None and state[0] != "complete" and state[1]:
                stop.left = (f"the adaptation's checkpoint at step {state[1]} in {folder} is kept, "
                             "and the same command continues it.")
            raise
        model = report["model"]
        kept = ("" if report["improved"] else
                f" ({report['vetoed'] or 'no gain on the held-out triplets: base weights kept'})")
        reused = (" (reused)" if report["already_complete"] else
                  f" (resumed at step {report['resumed'][-1]})" if report["resumed"] else "")
        adapted = (f", {report['skipped']}" if report["skipped"] else
                   f", adapted {report['steps']} steps{reused}: held-out error "
                   f"{report['validation_before']:.4f} -> {report['validation_after']:.4f}{kept}; "
                   f"adapted model in {report['output']}")
        for note in (report["diverged"], report["assumed"]):
            adapted += f"; {note}" if note else ""
    summary = engine.upscale_volume(source, model, factor=factor, output=_OUTPUT.value,
                                    isotropic=_ISOTROPIC.value, **options)
    if summary.get("already_complete"):
        print(summary["summary"])
        return
    shape = " x ".join(str(s) for s in summary["output_shape"])
    voxel = summary["voxel_size"]
    voxel = "unknown voxel size" if voxel is None else "voxel " + " x ".join(
        f"{v:g}" for v in voxel) + " nm"
    print(f"Wrote {summary['output']}: {shape} {summary['dtype']}, {voxel} "
          f"(x{summary['factor']:g} with model {_SHARED.model.value}{adapted}, "
          f"{summary['seconds']:.1f} s, {summary['precision']}{common.blockwise_note(summary)})")
