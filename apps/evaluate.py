"""``emzoo evaluate MODEL --data PATH --factor F``: scores a model and baselines on dropped slices.

The protocol of the Z-upscaling paper (see :mod:`emzoo.evaluate`): keep slices 0, F, 2F, ...,
reconstruct every dropped slice between the first and last kept ones, and score each against the
original with PSNR (data range of the dtype), SSIM (Gaussian 11, sigma 1.5) and IE, averaged over
dropped slices. MODEL is a registered name, a folder written by ``emzoo train`` / ``emzoo.save``,
an ensemble of them joined by ``+`` (``default+dan-em``), or ``none`` for baselines only. For anisotropic stacks use ``--factor 2``.

Example:
    emzoo evaluate default --data stack.tif --factor 4 --baselines linear,cubic \\
        --json scores.json --figure fig.png --split validation
"""

from absl import flags

from emzoo.apps import common

_DATA = flags.DEFINE_string("data", None, "The volume to score on (TIFF, file.h5:/dataset, slice folder).")
_FACTOR = flags.DEFINE_string("factor", "2", "Keep every F-th slice and reconstruct the others "
                              "(a whole number >= 2).")
_BASELINES = flags.DEFINE_string("baselines", "linear,cubic",
                                 "Comma-separated baselines: nearest, linear, cubic, flow "
                                 "(optical flow; needs emzoo[flow]); '' for none.")
_JSON = flags.DEFINE_string("json", None, "Write the scores (means and per-slice values) to this JSON file.")
_FIGURE = flags.DEFINE_string("figure", None, "Write a comparison figure (PNG) to this file.")
_CROP = flags.DEFINE_integer("crop", None, "Score a central CROP x CROP window of every slice.")
_SPLIT = flags.DEFINE_enum("split", "all", ["all", "validation", "train"],
                           "The z-range scored: the whole volume or the training pipeline's split.")
_BATCH = common.define_batch_size_flag()
_TILE = flags.DEFINE_integer("tile", None, "Process slices larger than this in overlapping tiles.")
_QUANTIZE = flags.DEFINE_boolean("quantize", False,
                                 "Round reconstructions to the volume's dtype before scoring.")
_VAL_FRACTION = flags.DEFINE_float("val-fraction", None,
                                   "Validation fraction of the z-range (default: the pipeline's).")
_OVERWRITE = common.define_overwrite_flag("Replace the --json and --figure files if they exist.")
_PRECISION = common.define_precision_flag("float32")  # scores in float32 unless asked
_RANDOM_WEIGHTS = common.define_random_weights_flag()
flags.DEFINE_alias("val_fraction", "val-fraction")


def _check_outputs(paths, overwrite):
    """Refuses, before any work, outputs whose folder does not exist or that exist already
    (unless ``overwrite``)."""
    import os

    from emzoo.errors import EmzooError, describe

    for name, path in paths.items():
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise EmzooError(describe(f"The folder of --{name} does not exist.",
                                      "a path in an existing folder", **{name: path}))
        if os.path.lexists(path) and not overwrite:
            raise EmzooError(describe(f"The --{name} file {path} already exists.",
                                      "a new file, or --overwrite to replace it", **{name: path}))


def _check_flags(baselines, has_model, shape):
    """The flags that need no model, checked before it is loaded (and TensorFlow imported)."""
    from emzoo.evaluate import BASELINES
    from emzoo.errors import EmzooError, describe

    for name in baselines:
        if name not in BASELINES:
            raise EmzooError(describe(f"Unknown baseline `{name}` in --baselines.",
                                      f"some of {', '.join(BASELINES)}, comma-separated",
                                      baselines=_BASELINES.value))
    if not has_model and not baselines:
        raise EmzooError(describe("Nothing to evaluate.", "a model, or baselines in --baselines",
                                  model="none", baselines=_BASELINES.value))
    common.check_flag_integer("batch-size", _BATCH.value, example=4)
    common.check_flag_integer("tile", _TILE.value, example=512)
    crop = common.check_flag_integer("crop", _CROP.value, example=256)
    if crop is not None and crop > min(shape[1:]):
        raise EmzooError(describe("--crop is larger than the slices.",
                                  f"a crop of at most {min(shape[1:])} pixels (the slices are "
                                  f"{shape[1]} x {shape[2]})", crop=crop))


def _write_json(path, report):
    """Writes ``report`` to ``path`` atomically (:func:`emzoo.atomic.write_json`)."""
    from emzoo.atomic import write_json

    write_json(path, report, indent=1)


def main(argv):
    import os

    from emzoo import evaluate, figures, zoo
    from emzoo.data.volumes import open_volume
    from emzoo.engine.interpolators import check_model_spec, ensemble_names, resolve_model
    from emzoo.errors import EmzooError, describe

    if len(argv) != 2:
        raise EmzooError(describe("emzoo evaluate takes one model.",
                                  "emzoo evaluate MODEL --data PATH --factor F (MODEL may be `none`)",
                                  arguments=argv[1:]))
    model_name = argv[1]
    factor = evaluate.protocol_factor(_FACTOR.value)
    if not _DATA.value:
        raise EmzooError(describe("No volume given.", "--data PATH", data=None))
    _check_outputs({"json": _JSON.value, "figure": _FIGURE.value}, _OVERWRITE.value)
    if model_name.lower() != "none":
        check_model_spec(model_name, _RANDOM_WEIGHTS.value)  # an ensemble a+b: each member
    baselines = [b.strip() for b in (_BASELINES.value or "").split(",") if b.strip()]
    volume = open_volume(_DATA.value)
    if len(volume.shape) != 3:
        raise EmzooError(describe("The volume is not a z-stack.", "a 3-D volume", shape=volume.shape))
    z_start, z_stop = evaluate.evaluation_range(volume.shape[0], _SPLIT.value, _VAL_FRACTION.value)
    kept, dropped = evaluate.protocol_indices(z_start, z_stop, factor)
    _check_flags(baselines, model_name.lower() != "none", volume.shape)  # before TensorFlow
    model = None
    if ensemble_names(model_name):
        model = resolve_model(model_name)
    elif model_name.lower() != "none":
        model = zoo.load_trained(model_name, allow_random_weights=_RANDOM_WEIGHTS.value,
                                 compile=False)
    shown = figures.figure_slice(kept, dropped, factor) if _FIGURE.value else None
    report = evaluate.evaluate_volume(
        volume, factor, model=model, baselines=baselines, split=_SPLIT.value,
        crop=_CROP.value, batch_size=_BATCH.value, quantize=_QUANTIZE.value,
        val_fraction=_VAL_FRACTION.value, model_name=model_name if model is not None else "model",
        keep_slices=[shown] if shown is not None else None, tile=_TILE.value,
        progress=model is not None, precision=_PRECISION.value)
    report["volume"] = _DATA.value
    report["model"] = None if model is None else model_name
    slices = report.pop("_slices", {})
    print(evaluate.format_table(report))
    if _JSON.value:
        _write_json(_JSON.value, report)
        print(f"scores written to {_JSON.value}")
    if _FIGURE.value:
        panels = slices[shown]
        title = (f"{os.path.basename(_DATA.value)}  x{factor}  slice {shown} "
                 f"(kept {shown - (shown - kept[0]) % factor} and "
                 f"{shown - (shown - kept[0]) % factor + factor})")
        figures.comparison_figure(_FIGURE.value, panels, title=title,
                                  crop=min(256, *volume.shape[1:]) if _CROP.value is None else min(256, _CROP.value))
        print(f"figure written to {_FIGURE.value}")
