"""The adaptation loop: a copy of the model fine-tuned on lateral triplets, kept only if better.

See :mod:`emzoo.adaptation` for what it trains on, why, and what resume reproduces.

Example:
    >>> import emzoo
    >>> report = emzoo.adapt("default", "stack.tif", factor=4, minutes=5)   # doctest: +SKIP
    >>> report["improved"], report["vetoed"], report["validation_after"]     # doctest: +SKIP
"""

import functools
import inspect
import json
import os
import pathlib
import sys
import time as time_lib

import numpy as np

from emzoo.adaptation.lateral import LateralTriplets, axial_batches, lateral_gaps, read_block
from emzoo.adaptation.run_folder import (CHECKPOINT_FILE, RUN_FILE, AnotherRunError, HeldSignals,
                                         array_digest, check_same_run, clear_run_folder,
                                         file_digest, finished_report, folder_beside,
                                         load_checkpoint, model_digest, prepare_output,
                                         run_state, save_checkpoint, write_json)
from emzoo.data.volumes.base import split_container_path
from emzoo.engine.progress import Progress
from emzoo.errors import AdaptationInterrupted, EmzooError, VolumeError, check_integer, describe

# The smallest training crop, in units of the model's size multiple (its coarsest pyramid level is
# then at least this many pixels wide), for adaptation to train at all. A short input (few slices
# at a coarse spacing) gives lateral planes only a few rows high once stretched along z, so the
# crops shrink to them: adapting the default on 17-pixel crops lowered PSNR on the dropped slices
# although self-validation, made of the same small crops, approved it (benchmarks/README.md).
# Below this, the base model is kept.
MIN_CROP_MULTIPLES = 4

# The z spacing over the x spacing (how much lateral planes are stretched along z) for which
# adaptation runs; outside it the base model is kept. Measured on cube 2 and on cube 2 binned 2x
# (benchmarks/README.md): at 4x adaptation helped or was neutral in every run; at
# 2x and 8x it lowered PSNR on the dropped slices in most runs although both self-validations
# approved the weights. The bounds lie between those measured points; other spacings were not
# measured.
STRETCH_RANGE = (3.0, 6.0)

# The training loss and the matching held-out error (the score self-validation compares).
LOSSES = {"l1": "mean_absolute_error", "l2": "mean_squared_error"}
# The least gain on the lateral held-out triplets (dB: 10 log10 of the error ratio) for the adapted
# weights to replace the base ones. Smaller gains did not carry over to the dropped slices (up or
# down by a few hundredths of a dB), larger ones did (benchmarks/README.md).
MIN_GAIN_DB = 0.05


def held_out_error(model, batches, loss):
    """Mean ``loss`` (``"l1"``: absolute, ``"l2"``: squared error) of ``model`` on ``batches``."""
    error = np.abs if loss == "l1" else np.square
    errors = [np.mean(error(np.asarray(model.predict_on_batch(x)["image"], np.float32) - y))
              for x, y in batches]
    return float(np.mean(errors))


def _saying_what_is_kept(adapt_function):
    """``adapt_function`` with Ctrl-C / SIGTERM raised as :class:`AdaptationInterrupted` when its
    ``output`` folder holds an unfinished run (which the same call with ``resume=True``
    continues); any other interrupt is raised as it came."""
    signature = inspect.signature(adapt_function)

    @functools.wraps(adapt_function)
    def run(*args, **kwargs):
        try:
            return adapt_function(*args, **kwargs)
        except AdaptationInterrupted:
            raise
        except KeyboardInterrupt as stop:
            output = signature.bind(*args, **kwargs).arguments.get("output")
            state = None if output is None else run_state(output)
            if state is not None and state[0] != "complete":
                raise AdaptationInterrupted(output, state[1] or 0) from stop
            raise
    return run


@_saying_what_is_kept
def adapt(model, volume, factor=None, isotropic=False, minutes=None, steps=None, output=None,
          voxel_size=None, batch_size=8, crop=128, learning_rate=5e-5, val_fraction=0.2,
          val_batches=4, evaluate_every=25, seed=0, overwrite=False, resume=False,
          checkpoint_every=100, checkpoint_seconds=30.0, progress=True, loss="l2",
          precision="auto"):
    """Fine-tunes a copy of ``model`` on lateral triplets of ``volume`` (see the module docstring).

    Args:
        model: a registered name, a saved folder, or a loaded emzoo model (it is not modified).
        volume: a path (``stack.tif``, ``file.h5:/raw``, a folder) or an opened volume.
        factor: the upscaling factor the model will be used for (sets the lateral gaps).
        isotropic: the factor is the z spacing over the x spacing.
        minutes, steps: the budget (wall time and/or optimizer steps; at least one). Time spent
            before an interruption counts; only a step budget makes a resumed run reproduce an
            uninterrupted one.
        output: folder to write the adapted model to (``emzoo.load(output)``), or None; it is
            also the run folder (checkpoints) while the adaptation runs.
        voxel_size: ``(z, y, x)`` in nm when the file does not say (it sets the gaps). When neither
            gives it, the z spacing is taken as ``factor`` times the x spacing (upscaling then
            makes the voxels isotropic), said on stderr and in the report's ``assumed``;
            ``isotropic`` needs it.
        overwrite: start again in ``output`` even if it holds a model or an interrupted run.
        resume: continue the interrupted run in ``output`` (or return it if it finished).
        checkpoint_every, checkpoint_seconds: a checkpoint every so many steps, and at least
            every so many seconds (only with ``output``).
        loss: ``"l2"`` (squared error, what PSNR scores; the default) or ``"l1"``; self-validation
            compares the same error. L2 scored higher than L1 on the dropped slices.
        precision: what the training computes in: ``"float32"``, ``"bf16"`` (Keras
            mixed_bfloat16: float32 weights, bf16 arithmetic; about 1.5x the steps per minute,
            but some runs met a non-finite loss early), or ``"auto"`` (float32, for that
            reason). The adapted model is returned in float32.

    Returns:
        A dict: ``model`` (the adapted model, or the base weights when adaptation did not help),
        ``improved``, ``validation_before`` / ``validation_after`` (the mean ``loss`` on the
        held-out triplets; None for an input not adapted), ``steps``, ``best_step``,
        ``seconds``, ``gaps``, ``factor``, ``output``, ``resumed`` (the steps it resumed at:
        empty for a run never interrupted), ``already_complete`` (``resume`` found the finished
        folder), ``skipped`` (why an input was not adapted: too short, or a z spacing outside
        ``STRETCH_RANGE`` times the x spacing; else None), ``diverged`` (when a step's loss was
        not finite: training stopped there and the best weights before it, or the base ones, are
        kept), ``vetoed`` (why weights better on the lateral held-out triplets were not kept: by
        less than ``MIN_GAIN_DB``; else None), ``assumed`` (the spacing assumed for an input
        without a voxel size; else None) and ``axial_before`` / ``axial_after`` (the error on the
        input's own axial triplets, reported only; None for an input of fewer than 3 slices or
        not adapted).

    Raises:
        AdaptationInterrupted: Ctrl-C or SIGTERM while ``output`` holds the unfinished run (its
            last checkpoint is kept; ``resume=True`` continues it).
    """
    from emzoo.data.volumes import ArrayVolume, check_voxel_size, open_volume
    from emzoo.engine.positions import check_factor
    from emzoo.engine.precision import copy_in_precision, resolve_precision

    if minutes is None and steps is None:
        raise EmzooError(describe("No budget for the adaptation.", "minutes and/or steps",
                                  minutes=None, steps=None))
    if minutes is not None and not (isinstance(minutes, (int, float)) and minutes > 0):
        raise EmzooError(describe("Invalid value for argument `minutes`.", "a number > 0",
                                  minutes=minutes))
    if loss not in LOSSES:
        raise EmzooError(describe("Invalid value for argument `loss`.",
                                  " or ".join(sorted(LOSSES)), loss=loss))
    # "auto" trains in float32: in bf16 the loss of the step right after a self-validation pass
    # was sometimes not finite (2 of 4 runs on cube 2 binned 2x, at steps 26 and 55), which ended
    # those runs there (benchmarks/README.md). Refused here, before any output, if invalid.
    precision = resolve_precision("float32" if precision == "auto" else precision, model=None)
    steps = None if steps is None else check_integer("steps", steps)
    batch_size = check_integer("batch_size", batch_size)
    evaluate_every = check_integer("evaluate_every", evaluate_every)
    checkpoint_every = check_integer("checkpoint_every", checkpoint_every)
    if not (isinstance(checkpoint_seconds, (int, float)) and checkpoint_seconds > 0):
        raise EmzooError(describe("Invalid value for argument `checkpoint_seconds`.",
                                  "a number > 0", checkpoint_seconds=checkpoint_seconds))
    if resume and output is None:
        raise EmzooError(describe("Nothing to resume without an output folder.",
                                  "`output` (a folder) with resume", output=None))
    if resume and overwrite:
        raise EmzooError(describe("`resume` and `overwrite` exclude each other.",
                                  "resume=True to continue the folder, or overwrite=True to start "
                                  "again",
                                  resume=True, overwrite=True))
    folder = None if output is None else pathlib.Path(os.fspath(output)).expanduser()
    if isinstance(volume, np.ndarray):
        source = ArrayVolume(volume, voxel_size)
    else:
        source = volume if hasattr(volume, "read_crop") else open_volume(volume)
    voxel = check_voxel_size(voxel_size) or source.voxel_size
    assumed = None
    if voxel is None and isotropic:
        raise VolumeError(describe(
            "`isotropic` needs the voxel size, and the file does not say.",
            "`voxel_size`, z,y,x in nm", voxel_size=None))
    if isotropic:
        factor = voxel[0] / voxel[2]
    factor = float(check_factor(2 if factor is None else factor))
    if voxel is None:   # what upscaling by `factor` is for: isotropic voxels (z = factor x x)
        assumed = (f"the input does not give its voxel size: its z spacing is taken as {factor:g}x "
                   f"its x spacing (the output isotropic); --voxel-size Z,Y,X sets it")
        if progress:
            print(f"emzoo adapt: {assumed}", file=sys.stderr)
    z_over_x = factor if voxel is None else voxel[0] / voxel[2]
    gaps = lateral_gaps(z_over_x, 1.0, factor)
    block, _ = read_block(source)

    record, mode, stored = None, "fresh", None
    if folder is not None:
        path = getattr(source, "path", None)
        record = json.loads(json.dumps({
            "input": str(path), "input_sha256": file_digest(path or ""),
            "data_sha256": array_digest(block), "factor": factor,
            "voxel_size": None if voxel is None else [float(v) for v in voxel],
            "z_spacing_over_x": z_over_x, "budget": {"minutes": minutes, "steps": steps},
            "batch_size": batch_size, "crop": crop, "learning_rate": learning_rate,
            "val_fraction": val_fraction, "val_batches": val_batches,
            "evaluate_every": evaluate_every, "seed": seed, "loss": loss,
            "precision": precision}))
        mode, stored = prepare_output(folder, record, resume, overwrite)

    import keras  # after the checks above, which need no TensorFlow

    from emzoo import zoo

    base = zoo.load(model, compile=False) if isinstance(model, (str, os.PathLike)) else model
    entry = dict(getattr(base, "zoo_entry", {}) or {})
    if record is not None:
        record["base_model"] = entry.get("name", getattr(base, "name", None))
        record["base_weights_sha256"] = model_digest(base)
        if mode != "fresh":
            check_same_run(folder, stored, record, ["base_weights_sha256"])
    if mode == "complete":
        return finished_report(folder, stored)

    adapted = copy_in_precision(base, precision)
    adapted.zoo_entry = entry
    adapted.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                    loss=LOSSES[loss], metrics=[])
    adapted.optimizer.build(adapted.trainable_variables)  # its slots exist before a restore

    # An input that is not adapted is told so before its lateral planes are cut (a volume too
    # small for them at a spacing outside the range is still only "not adapted"), and nothing is
    # scored on it: its report's validation_before / validation_after are None.
    skipped, triplets = None, None
    if not STRETCH_RANGE[0] <= z_over_x <= STRETCH_RANGE[1]:
        skipped = (f"not adapted: the input's z spacing is {z_over_x:.3g}x its x spacing, and "
                   f"adaptation runs only from {STRETCH_RANGE[0]:g}x to {STRETCH_RANGE[1]:g}x "
                   f"(outside, it lowered PSNR on the dropped slices although self-validation "
                   f"approved it); base model kept")
    else:
        triplets = LateralTriplets(block, z_over_x, gaps, crop, val_fraction)
        min_crop = MIN_CROP_MULTIPLES * int(getattr(adapted, "size_multiple", 1) or 1)
        if triplets.crop < min_crop:
            skipped = (f"not adapted: {block.shape[0]} input slices make lateral planes of "
                       f"{triplets.stretched_depth} rows at this spacing, too few for the model's "
                       f"{min_crop}-pixel crops; base model kept")
    axial, held_out = [], []
    if not skipped:
        axial = axial_batches(block, int(getattr(adapted, "size_multiple", 1) or 1))
        held_rng = np.random.default_rng([seed, 0])
        held_out = [triplets.batch(held_rng, batch_size, adapted.channels, held_out=True)
                    for _ in range(val_batches)]
    state, best_weights = None, None
    if mode == "resume":
        if (folder / CHECKPOINT_FILE).is_file():
            state, best_weights = load_checkpoint(folder, adapted)
        else:   # killed before its first checkpoint: it starts again, recorded as resumed
            state = {"resumed_at": []}
        state["resumed_at"] = state["resumed_at"] + [state.get("step", 0)]
    if state is None or "step" not in state:
        before = held_out_error(adapted, held_out, loss) if held_out else None
        state = {"step": 0, "seconds": 0.0, "before": before, "best_score": before,
                 "axial_before": held_out_error(adapted, axial, loss) if axial else None,
                 "best_step": 0, "evaluated_step": 0,
                 "resumed_at": [] if state is None else state["resumed_at"]}
    if folder is not None and mode == "fresh":
        if overwrite:
            clear_run_folder(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / RUN_FILE, record)

    def evaluate():
        score = held_out_error(adapted, held_out, loss)
        state["evaluated_step"] = state["step"]
        if score < state["best_score"]:
            state.update(best_score=score, best_step=state["step"])
            return adapted.get_weights()
        return best_weights

    budget = None if minutes is None else 60.0 * minutes
    session_start = time_lib.monotonic()
    spent_before = state["seconds"]

    def spent():
        return spent_before + time_lib.monotonic() - session_start

    bar = _progress(steps, minutes, progress, state["step"], spent_before)
    last_checkpoint = session_start
    diverged = None
    with HeldSignals(enabled=folder is not None) as held:
        while (not skipped and (steps is None or state["step"] < steps)
               and (budget is None or spent() < budget)):
            batch = triplets.batch(np.random.default_rng([seed, 1, state["step"]]), batch_size,
                                   adapted.channels)
            loss_value = adapted.train_on_batch(*batch)
            state["step"] += 1
            if not np.all(np.isfinite(loss_value)):   # diverged: nothing after this can help
                diverged = f"training diverged at step {state['step']} (non-finite loss)"
                break
            if state["step"] % evaluate_every == 0:
                best_weights = evaluate()
            bar(state["step"], spent(), state["best_score"])
            now = time_lib.monotonic()
            if folder is not None and (state["step"] % checkpoint_every == 0 or held.pending
                                       or now - last_checkpoint >= checkpoint_seconds):
                state["seconds"] = spent()
                save_checkpoint(folder, adapted, state, best_weights)
                last_checkpoint = time_lib.monotonic()
            if held.pending:
                held.deliver()   # raises (KeyboardInterrupt) or ends the process, as asked
        if state["step"] > state["evaluated_step"] and not diverged:
            best_weights = evaluate()
        state["seconds"] = spent()
        improved = best_weights is not None
        axial_after, vetoed = state["axial_before"], None
        gain = 10.0 * np.log10(state["before"] / state["best_score"]) if improved else 0.0
        if improved and gain < MIN_GAIN_DB:
            vetoed = (f"the adapted weights were only {gain:.3f} dB better on the lateral held-out "
                      f"triplets (less than {MIN_GAIN_DB:g} dB): base weights kept")
            improved = False
        if improved and axial:   # reported, not a veto: it disagreed with the dropped slices
            adapted.set_weights(best_weights)
            axial_after = held_out_error(adapted, axial, loss)
        adapted.set_weights(best_weights if improved else base.get_weights())
        if adapted.dtype_policy.name != base.dtype_policy.name:  # trained in bf16: returned in
            adapted = copy_in_precision(adapted, "float32")      # float32, as the base model
            adapted.zoo_entry = entry
        bar(None, None, None)
        report = {"model": adapted, "improved": improved,
                  "validation_before": state["before"], "validation_after": state["best_score"],
                  "steps": state["step"], "best_step": state["best_step"],
                  "seconds": state["seconds"], "gaps": gaps, "factor": factor, "output": None,
                  "resumed": state["resumed_at"], "already_complete": False, "skipped": skipped,
                  "diverged": diverged, "vetoed": vetoed, "assumed": assumed,
                  "axial_before": state["axial_before"], "axial_after": axial_after}
        if folder is not None:
            metadata = dict(entry.get("metadata", {}))
            metadata["adaptation"] = dict(
                record, lateral_gaps=gaps, steps_run=state["step"], best_step=state["best_step"],
                seconds=state["seconds"],
                self_validation={"error": {"l1": "mae", "l2": "mse"}[loss],
                                 "before": state["before"], "after": state["best_score"],
                                 "axial_before": state["axial_before"],
                                 "axial_after": axial_after},
                replaced_base_weights=improved, skipped=skipped, diverged=diverged,
                vetoed=vetoed, assumed=assumed,
                resumed=bool(state["resumed_at"]),
                resumed_at_steps=state["resumed_at"])
            # The weights first, config.json last (by rename): loadable only when complete.
            zoo.save(adapted, folder, name=folder.name, metadata=metadata, overwrite=True)
            for name in (CHECKPOINT_FILE, RUN_FILE):
                (folder / name).unlink(missing_ok=True)
            report["output"] = str(folder)
    return report


def adapt_beside_output(model, volume, output, overwrite=False, **settings):
    """:func:`adapt` in the folder :func:`~emzoo.adaptation.run_folder.folder_beside` ``output``,
    as ``emzoo upscale OUTPUT --adapt M`` runs it: the folder is kept (a loadable model), and the
    same call made again continues an interrupted adaptation or returns a finished one, so a job
    run again after a crash does not adapt again, and a resumed blockwise job keeps its weights.

    A folder left by another run (another budget, factor, model or input) is adapted anew when
    ``output`` does not exist (it belonged to an output that was removed), and refused
    (:class:`~emzoo.adaptation.run_folder.AnotherRunError`) when it does: an unfinished output
    must be finished with the weights it was started with. ``overwrite`` always adapts anew.

    Example:
        >>> report = adapt_beside_output("default", "stack.tif", "iso.tif", factor=4,
        ...                              minutes=10)                      # doctest: +SKIP
        >>> report["output"]                                              # doctest: +SKIP
        'iso.tif.adapted'
    """
    folder = folder_beside(output)
    try:
        try:
            return adapt(model, volume, output=folder, resume=not overwrite, overwrite=overwrite,
                         **settings)
        except AnotherRunError:
            if os.path.exists(split_container_path(os.fspath(output))[0]):
                raise
            return adapt(model, volume, output=folder, overwrite=True, **settings)
    except AdaptationInterrupted as stop:  # run again, this call continues it by itself
        raise AdaptationInterrupted(stop.folder, stop.step, resume_needed=False) from stop.__cause__


def describe_report(report):
    """What an adaptation did, in words: the text ``emzoo upscale --adapt`` adds to its line.

    Example:
        >>> describe_report({"skipped": "not adapted: z spacing 2x the x spacing"})
        'not adapted: z spacing 2x the x spacing'
    """
    if report.get("skipped"):
        return report["skipped"]
    kept = ("" if report["improved"] else
            f" ({report['vetoed'] or 'no gain on the held-out triplets: base weights kept'})")
    reused = (" (reused)" if report["already_complete"] else
              f" (resumed at step {report['resumed'][-1]})" if report["resumed"] else "")
    text = (f"adapted {report['steps']} steps{reused}: held-out error "
            f"{report['validation_before']:.4f} -> {report['validation_after']:.4f}{kept}; "
            f"adapted model in {report['output']}")
    for note in (report.get("diverged"), report.get("assumed")):
        text += f"; {note}" if note else ""
    return text


def _progress(steps, minutes, enabled, already_steps=0, already_seconds=0.0):
    """A progress callback ``(step, seconds, best) -> None`` on stderr (``step=None`` closes it): a
    bar over the steps with ``steps``, else over the seconds of the ``minutes`` budget, with the
    step and the best held-out error; ``already_*``: what was done before a resume."""
    if steps is not None:
        bar = Progress(steps, "adapt", enabled=enabled, unit="steps", initial=already_steps)
    else:
        bar = Progress(round(60.0 * minutes), "adapt", enabled=enabled, unit="s",
                       initial=int(already_seconds), show_rate=False)

    def show(step, seconds, best):
        if step is None:
            bar.close()
            return
        bar.set_status(f"step {step}, best held-out error {best:.4g}")
        bar.update((step if steps is not None else min(int(seconds), bar.total)) - bar.done)

    return show
