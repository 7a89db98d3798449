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

``--detect`` finds the damage itself (blank, duplicated or broken sections; folds, tears, blobs,
noise patches, shifted regions: see :func:`emzoo.engine.damage.find_damage`) and repairs only
the damaged pixels; ``--mask MASK`` repairs the pixels a mask volume marks (non-zero; e.g. a
``--save-mask`` edited by hand); both together repair their union. Pixels farther than
``--band`` pixels from the mask are copied byte for byte. ``--detect --dry-run`` only reports.

Example:
    emzoo repair stack.tif -o fixed.tif --slices 12,37,40-42 --model default
    emzoo repair stack.tif --detect --dry-run --report found.json --save-mask mask.tif
    emzoo repair stack.tif -o fixed.tif --mask mask.tif
    emzoo repair in.zarr -o fixed.zarr --slices 12,37,40-42 --workers 4
"""

from absl import flags

from emzoo.apps import common

_OUTPUT = flags.DEFINE_string("output", None, "Where to write the repaired volume.", short_name="o")
_SLICES = flags.DEFINE_string("slices", None, "Damaged slices, 0-based: e.g. 12,37,40-42.")
_DETECT = flags.DEFINE_boolean("detect", False, "Find damaged slices and regions and repair only "
                               "the damaged pixels.")
_DRY_RUN = flags.DEFINE_boolean("dry-run", False, "With --detect: only report what was found.")
_MASK = flags.DEFINE_string("mask", None, "A mask volume of the input's shape (non-zero = "
                            "damaged): repair only those pixels.")
_SAVE_MASK = flags.DEFINE_string("save-mask", None, "With --detect: write the mask found (uint8, "
                                 "one label per kind of damage).")
_REPORT = flags.DEFINE_string("report", None, "With --detect: write what was found as JSON.")
_SENSITIVITY = flags.DEFINE_float("sensitivity", 1.0, "With --detect: 1 the default, 2 finds "
                                  "fainter damage, 0.5 only the plainest.")
_BAND = flags.DEFINE_integer("band", 4, "With --detect / --mask: pixels outside the mask blended "
                             "into the repair (0: none).")
_BLEND = flags.DEFINE_enum("blend", "feather", ["feather", "poisson"],
                           "With --detect / --mask: how the repair meets the intact pixels: a "
                           "linear feather over the band, or gradient-domain (Poisson) over the "
                           "mask and band.")
flags.DEFINE_alias("dry_run", "dry-run")
flags.DEFINE_alias("save_mask", "save-mask")
_SHARED = common.define_volume_flags()


def main(argv):
    from emzoo import engine, samples
    from emzoo.errors import EmzooError, describe

    common.prepare_volume_app()
    if len(argv) != 2:
        raise EmzooError(describe("emzoo repair takes one input volume.",
                                  "emzoo repair INPUT -o OUTPUT --slices 12,37", arguments=argv[1:]))
    if _DETECT.value or _MASK.value or _DRY_RUN.value:
        return _repair_damage(argv[1])
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


def _repair_damage(source):
    """``--detect`` / ``--mask``: :func:`emzoo.engine.damage.repair_damage`, flags checked first."""
    from emzoo import samples
    from emzoo.engine import parse_voxel_size
    from emzoo.engine.damage import repair_damage
    from emzoo.errors import EmzooError, describe

    if _SLICES.value:
        raise EmzooError(describe("--slices cannot be combined with --detect or --mask.",
                                  "either --slices, or --detect and/or --mask",
                                  slices=_SLICES.value))
    if _DRY_RUN.value and not _DETECT.value:
        raise EmzooError(describe("--dry-run only reports what --detect finds.",
                                  "--detect --dry-run", mask=_MASK.value))
    if (_SHARED.workers.value is not None or _SHARED.scheduler.value is not None
            or _SHARED.resume.value or _SHARED.block_size.value is not None):
        raise EmzooError(describe("--detect and --mask run on one process.",
                                  "no --workers, --scheduler, --resume or --block-size",
                                  workers=_SHARED.workers.value))
    overwrite = _SHARED.overwrite.value
    if not _DRY_RUN.value:
        if not _OUTPUT.value:
            raise EmzooError(describe("No output given.", "-o OUTPUT (e.g. -o fixed.tif)",
                                      output=None))
        common.check_output_flag(_OUTPUT.value, overwrite, kind="volume")
    if _SAVE_MASK.value:
        common.check_output_flag(_SAVE_MASK.value, overwrite, kind="volume")
    if _REPORT.value:
        common.check_output_flag(_REPORT.value, overwrite)
    band = common.check_flag_integer("band", _BAND.value, minimum=0, example=4)
    model = None if _DRY_RUN.value else common.job_model(_SHARED.model.value,
                                                         _SHARED.random_weights.value)
    result = repair_damage(
        samples.resolve_input(source), model, None if _DRY_RUN.value else _OUTPUT.value,
        detect=_DETECT.value, mask=_MASK.value, dry_run=_DRY_RUN.value,
        save_mask=_SAVE_MASK.value, report=_REPORT.value, sensitivity=_SENSITIVITY.value,
        band=band, blend=_BLEND.value, overwrite=overwrite, tile=_SHARED.tile.value,
        overlap=_SHARED.overlap.value,
        batch_size=_SHARED.batch.value, progress=not _SHARED.quiet.value,
        voxel_size=parse_voxel_size(_SHARED.voxel.value) if _SHARED.voxel.value else None,
        jit_compile=common.xla_setting(_SHARED.xla.value), precision=_SHARED.precision.value,
        allow_incomplete=_SHARED.allow_incomplete.value,
        chunks=common.parse_chunks(_SHARED.chunks.value))
    if result["findings"] is not None:
        for found in result["findings"]:
            where = "" if found["fraction"] == 1 else f", {found['fraction']:.0%} of the slice"
            print(f"slice {found['slice']}: {found['kind']} (score {found['score']:g}{where})")
        written = [path for path in (result["report"], result["mask_path"]) if path]
        print(f"Found damage in {len(result['damaged_slices'])} slice(s)"
              + (f"; wrote {', '.join(written)}" if written else ""))
    if "repair" in result:
        summary = result["repair"]
        print(f"Wrote {summary['output']}: repaired {summary['repaired_pixels']} masked "
              f"pixel(s) in {len(summary['repaired'])} slice(s) with model {_SHARED.model.value} "
              f"({summary['seconds']:.1f} s, {summary['precision']})")
