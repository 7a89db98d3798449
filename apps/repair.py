"""``emzoo repair INPUT -o OUTPUT --slices 12,37``: replaces damaged slices by interpolation.

Each listed slice (0-based; ranges like ``40-42`` allowed) is replaced by interpolating between
the nearest good slices on both sides; runs of adjacent damaged slices get evenly spaced
positions between their good neighbours (see :func:`emzoo.engine.repair_volume`). All other
slices are copied unchanged; dtype and voxel size are kept. INPUT ``sample`` means the bundled
sample.

``--workers N`` runs blockwise on a local Dask cluster of N worker processes (``--scheduler
ADDRESS`` on an existing one) and writes a Zarr, OME-Zarr or N5 output in place; ``--resume``
continues such a job after a crash, redoing only the blocks not recorded as finished. An
unfinished output is refused as an input without ``--allow-incomplete``. See
:mod:`emzoo.engine.distributed`.

Example:
    emzoo repair stack.tif -o fixed.tif --slices 12,37,40-42 --model default
    emzoo repair in.zarr -o fixed.zarr --slices 12,37,40-42 --workers 4
"""

from absl import flags

from emzoo.apps import common

_OUTPUT = flags.DEFINE_string("output", None, "Where to write the repaired volume.", short_name="o")
_SLICES = flags.DEFINE_string("slices", None, "Damaged slices, 0-based: e.g. 12,37,40-42.")
_SHARED = common.define_volume_flags()


def main(argv):
    from emzoo import engine, samples
    from emzoo.errors import EmzooError, describe

    common.prepare_volume_app()
    if len(argv) != 2:
        raise EmzooError(describe("emzoo repair takes one input volume.",
                                  "emzoo repair INPUT -o OUTPUT --slices 12,37", arguments=argv[1:]))
    if not _OUTPUT.value:
        raise EmzooError(describe("No output given.", "-o OUTPUT (e.g. -o fixed.tif)", output=None))
    if not _SLICES.value:
        raise EmzooError(describe("No damaged slices given.", "--slices 12,37 (0-based)",
                                  slices=None))
    job = common.volume_job(_SHARED)
    plan = engine.plan_repair(samples.resolve_input(argv[1]), engine.parse_slices(_SLICES.value),
                              _OUTPUT.value, **job)  # everything checked once, before the model
    model = common.job_model(_SHARED.model.value, _SHARED.random_weights.value, plan.options)
    summary = engine.run(plan, model, progress=not _SHARED.quiet.value).to_dict()
    if summary.get("already_complete"):
        print(summary["summary"])
        return
    repaired = ",".join(str(z) for z in summary["repaired"])
    print(f"Wrote {summary['output']}: repaired slice(s) {repaired} with model {_SHARED.model.value} "
          f"({summary['seconds']:.1f} s, {summary['precision']}{common.blockwise_note(summary)})")
