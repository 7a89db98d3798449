"""Self-supervised adaptation of a trained model to the volume it is about to upscale.

No training set matches every microscope, so a model is fine-tuned on the input volume itself,
using only the slices the user has (never anything the upscaling will produce or be scored
against). The training frames are **lateral**: planes perpendicular to x and to y, the volume's
fine axes. A plane at x and the planes at x - g and x + g form a triplet whose outer frames are
``2 g`` lateral pixels apart; ``g`` is chosen per recursion level of the requested factor so that
the physical distance a triplet bridges matches what the model bridges at that level (input z
spacing ``dz``, lateral spacing ``dx``, level ``k = 1 .. log2(P)``: outer frames ``dz / 2^(k-1)``
apart, so ``g = round(dz / (2^k dx))``, at least 1).

Lateral planes are coarse along z (one row per input slice). Before cropping they are stretched
along z by linear interpolation to the lateral spacing, so they look like the isotropic slices the
model sees at inference; used raw (or as axial triplets of the input's own slices, whose outer
frames are twice the input spacing apart) the adaptation taught the model the wrong spacing and
lowered its scores (measurements in benchmarks/README.md).

**Never worse than the base model on self-validation, by construction.** The volume is split
along x: planes from the last ``validation_fraction`` of the x range (and y-planes cropped to it)
are held out. Both the base weights and the adapted ones are scored on the same fixed held-out
triplets (mean absolute error); the adapted weights replace the base ones only if they score
better, and the best weights seen during training are kept (early stopping). A short input whose
stretched planes allow only crops smaller than ``MIN_CROP_MULTIPLES`` times the model's size
multiple is not adapted at all (the report's ``skipped`` says why): self-validation on such crops
approved weights that were worse on the real task.

**Only the input is read.** Everything comes from one centre window (at most ``MAX_EXTENT``
pixels square) of the given volume, read once; the result is a function of those pixels, the
voxel size, the base weights and the settings. Adapting on the kept slices of a longer stack is
therefore blind to the dropped ones (``tests/test_adaptation.py`` checks the files opened).

**Run folder and resume.** With ``output``, the folder is also the run folder: it holds
``adaptation-run.json`` (what the run was started for: the base weights' sha256, the input's
sha256, factor, voxel size, budget and settings) and ``adaptation-checkpoint.h5`` (weights,
optimizer state, step, time spent, the held-out scores and the best weights so far), rewritten
atomically every ``checkpoint_every`` steps or ``checkpoint_seconds`` seconds, and when SIGINT
(Ctrl-C) or SIGTERM arrives (the signal is held until the step ends, then delivered). ``resume``
continues from that checkpoint (a run killed before its first checkpoint starts again from step
0), and refuses a folder started for another model, volume, factor, budget or settings. The
adapted model (``config.json`` and ``model.weights.h5``) is written only at the end, the weights
first and ``config.json`` last by rename, so a folder :func:`emzoo.load` accepts appears only
when the run is complete; the run files are then removed. Resuming a complete folder returns it.

What resume reproduces: training batch ``i`` is a pure function of ``(seed, i)`` and the held-out
triplets of ``seed``, so with a **step budget** a run that is killed and resumed (any number of
times) ends with the same weights as an uninterrupted one, in the same environment (the same
TensorFlow / Keras build and CPU or GPU; float results may differ across them). With a **minutes
budget** the number of steps depends on the machine's speed and load, so no two runs, resumed or
not, are guaranteed the same weights; resume there guarantees that the time already spent (up to
the last checkpoint; time between the runs does not count) counts toward the budget, that steps
are repeated only from the last checkpoint on, and that the result is never worse than the base
on self-validation.

The adapted folder's metadata (``metadata.adaptation``) records the base model, the input (path
and sha256), the budget, the steps done, the self-validation scores before and after, and
whether (and at which steps) the run was resumed.

Example:
    >>> import emzoo
    >>> report = emzoo.adapt("default", "stack.tif", factor=4, minutes=5,
    ...                      output="runs/adapted")            # doctest: +SKIP
    >>> # killed? the same call with resume=True continues it:
    >>> report = emzoo.adapt("default", "stack.tif", factor=4, minutes=5,
    ...                      output="runs/adapted", resume=True)  # doctest: +SKIP
    >>> model = emzoo.load("runs/adapted")                     # doctest: +SKIP
"""

import hashlib
import json
import math
import os
import pathlib
import time as time_lib

import numpy as np

from emzoo.errors import EmzooError, VolumeError, check_integer, describe

# The largest (y, x) window read from the volume: adaptation needs texture, not the whole slice.
MAX_EXTENT = 512
# The smallest training crop, in units of the model's size multiple (its coarsest pyramid level is
# then at least this many pixels wide), for adaptation to train at all. A short input (few slices
# at a coarse spacing) gives lateral planes only a few rows high once stretched along z, so the
# crops shrink to them: adapting the default on 17-pixel crops lowered PSNR on the dropped slices
# although self-validation, made of the same small crops, approved it (benchmarks/README.md).
# Below this, the base model is kept.
MIN_CROP_MULTIPLES = 4


def lateral_gaps(z_spacing, lateral_spacing, factor):
    """Lateral gaps ``g`` (pixels) whose triplets bridge what each recursion level bridges.

    Example:
        >>> lateral_gaps(40.0, 10.0, 4)        # outer frames 40 and 20 nm apart
        [2, 1]
        >>> lateral_gaps(50.0, 4.0, 8)
        [6, 3, 2]
    """
    levels = max(1, math.ceil(math.log2(max(float(factor), 2.0)) - 1e-9))
    ratio = float(z_spacing) / float(lateral_spacing)
    gaps = []
    for level in range(1, levels + 1):
        gap = max(1, int(round(ratio / 2 ** level)))
        if gap not in gaps:
            gaps.append(gap)
    return gaps


def stretch_along_z(plane, ratio):
    """``(Z, L)`` plane resampled along z by linear interpolation to ``round((Z - 1) * ratio) + 1``
    rows."""
    rows = plane.shape[0]
    length = int(round((rows - 1) * ratio)) + 1
    if length <= rows:
        return plane
    position = np.linspace(0.0, rows - 1, length, dtype=np.float64)
    low = np.minimum(np.floor(position).astype(int), rows - 2)
    weight = (position - low).astype(np.float32)[:, None]
    return (1.0 - weight) * plane[low] + weight * plane[low + 1]


class LateralTriplets:
    """Lateral triplets of a normalised block ``(Z, Y, X)``, split along x into train / held out.

    Args:
        block: float32 ``(Z, Y, X)`` in [0, 1].
        ratio: z spacing over lateral spacing (how much a plane is stretched along z).
        gaps: lateral gaps in pixels (see :func:`lateral_gaps`).
        crop: square crop size of the frames (reduced to what the planes allow).
        validation_fraction: the share of the x range held out for self-validation.
    """

    def __init__(self, block, ratio, gaps, crop, validation_fraction=0.2):
        self.block = block
        self.ratio = float(ratio)
        self.gaps = list(gaps)
        depth, height, width = block.shape
        self.stretched_depth = int(round((depth - 1) * max(self.ratio, 1.0))) + 1
        self.crop = int(min(crop, self.stretched_depth, height, width))
        split = int(round(width * (1.0 - validation_fraction)))
        margin = max(self.gaps)
        self.train_x = (margin, split - margin)          # x-planes (and their gap neighbours)
        self.held_x = (split + margin, width - margin)
        if (self.train_x[1] - self.train_x[0] < 1 or self.held_x[1] - self.held_x[0] < 1
                or split < self.crop or height < 2 * margin + 1
                or self.crop < 8):
            raise VolumeError(describe(
                "The volume is too small to adapt on.",
                f"at least about {2 * self.crop} x {2 * self.crop} pixels per slice and enough "
                f"slices for {self.crop}-pixel crops after stretching along z",
                shape=tuple(block.shape), crop=crop, gaps=self.gaps))
        self.split = split

    def _triplet(self, rng, held_out):
        """One ``(x0, y, x1)`` of ``crop`` x ``crop`` frames."""
        gap = self.gaps[rng.integers(len(self.gaps))]
        depth, height, _ = self.block.shape
        y_planes_fit = (self.block.shape[2] - self.split if held_out else self.split) >= self.crop
        if rng.random() < 0.5 or not y_planes_fit:   # planes perpendicular to x: (Z, Y) images
            low, high = self.held_x if held_out else self.train_x
            x = int(rng.integers(low, high))
            frames = [self.block[:, :, x + d] for d in (-gap, 0, gap)]
        else:                    # planes perpendicular to y, within this split's x range
            y = int(rng.integers(gap, height - gap))
            x_range = slice(self.split, None) if held_out else slice(0, self.split)
            frames = [self.block[:, y + d, x_range] for d in (-gap, 0, gap)]
        frames = [stretch_along_z(f, self.ratio) for f in frames]
        rows, cols = frames[0].shape
        top = int(rng.integers(0, rows - self.crop + 1))
        left = int(rng.integers(0, cols - self.crop + 1))
        frames = [f[top:top + self.crop, left:left + self.crop] for f in frames]
        if rng.random() < 0.5:
            frames = [f[:, ::-1] for f in frames]
        if rng.random() < 0.5:  # the model sees slices in both orientations
            frames = [f.T for f in frames]
        return frames

    def batch(self, rng, size, channels, held_out=False):
        """``(inputs, target)`` for Keras: ``{"x0", "x1", "time"}`` and the middle frames."""
        triplets = [self._triplet(rng, held_out) for _ in range(size)]
        stack = np.asarray(triplets, np.float32)[..., None]            # (B, 3, H, W, 1)
        if channels != 1:
            stack = np.repeat(stack, channels, axis=-1)
        inputs = {"x0": stack[:, 0], "x1": stack[:, 2],
                  "time": np.full((size, 1), 0.5, np.float32)}
        return inputs, stack[:, 1]



RUN_FILE = "adaptation-run.json"
CHECKPOINT_FILE = "adaptation-checkpoint.h5"
# The record keys a resumed run must share with the run that started its folder, and their names.
_IDENTITY = {"base_weights_sha256": "model", "input_sha256": "volume", "data_sha256": "volume",
             "factor": "factor", "voxel_size": "voxel size", "budget": "budget",
             "batch_size": "batch size", "crop": "crop", "learning_rate": "learning rate",
             "validation_fraction": "validation fraction",
             "validation_batches": "validation batches", "evaluate_every": "evaluation interval",
             "seed": "seed"}


def _read_block(volume):
    """The normalised ``(Z, Y, X)`` block (centre window of at most MAX_EXTENT) and its voxel
    size."""
    depth, height, width = volume.shape
    h, w = min(height, MAX_EXTENT), min(width, MAX_EXTENT)
    top, left = (height - h) // 2, (width - w) // 2
    block = np.stack([volume.normalise_raw(volume.read_crop(z, top, left, h, w))
                      for z in range(depth)]).astype(np.float32)
    return block, volume.voxel_size


def _mean_abs_error(model, batches):
    errors = [np.mean(np.abs(np.asarray(model.predict_on_batch(x)["image"]) - y))
              for x, y in batches]
    return float(np.mean(errors))


def _file_digest(path):
    from emzoo import weights

    path = pathlib.Path(os.fspath(path))
    return weights.sha256_of(path) if path.is_file() else None


def _array_digest(array):
    """sha256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _model_digest(model):
    """sha256 of a model's architecture, configuration and weights."""
    described = {"architecture": getattr(model, "architecture", type(model).__name__),
                 "config": model.get_config()}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    for weight in model.get_weights():
        digest.update(_array_digest(np.asarray(weight)).encode())
    return digest.hexdigest()


def _write_json(path, record):
    tmp = path.with_name("tmp-" + path.name)
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _finished_record(folder):
    """``metadata.adaptation`` of the model in ``folder``, or None when it is not an adaptation."""
    entry = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    record = (entry.get("metadata") or {}).get("adaptation")
    return record if isinstance(record, dict) and "data_sha256" in record else None


def _checkpoint_state(folder):
    """The state stored in ``folder``'s checkpoint, or None when there is none."""
    import h5py

    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        return None
    with h5py.File(path, "r") as file:
        return json.loads(file.attrs["state"])


def run_state(output):
    """What the folder ``output`` holds: ``("complete", steps)`` for a finished model,
    ``("interrupted", step)`` for a run that can be resumed (``step``: its last checkpoint, 0 when
    it has none yet), or None.

    Example:
        >>> run_state("no/such/folder") is None
        True
    """
    folder = pathlib.Path(os.fspath(output))
    if (folder / "config.json").is_file():
        record = _finished_record(folder) or {}
        return "complete", record.get("steps_run")
    if (folder / RUN_FILE).is_file():
        state = _checkpoint_state(folder)
        return "interrupted", 0 if state is None else state["step"]
    return None


def _check_same_run(folder, stored, current, keys):
    """Refuses to resume ``folder`` when ``current`` differs from ``stored`` on ``keys``."""
    changed = [key for key in keys if stored.get(key) != current.get(key)]
    if changed:
        names = ", ".join(dict.fromkeys(_IDENTITY[key] for key in changed))
        raise EmzooError(describe(
            f"Cannot resume {folder}: it was started for another {names}.",
            f"the model, volume, factor, budget and settings it was started with (recorded in "
            f"{RUN_FILE}, or in the metadata of a finished folder), or a new -o folder",
            **{key: current.get(key) for key in changed}))


def _prepare_output(folder, record, resume, overwrite):
    """``("fresh" | "resume" | "complete", the stored record)`` for the run folder; refuses an
    existing folder without ``resume`` / ``overwrite`` and a resume started for another run."""
    stored = None
    if overwrite or not folder.exists():
        return "fresh", None
    if (folder / "config.json").is_file():
        stored = _finished_record(folder)
        if not resume:
            raise EmzooError(describe(
                f"{folder} already holds a model.",
                "a new folder, --resume to return a finished adaptation, or --overwrite to "
                "replace it", output=str(folder)))
        if stored is None:
            raise EmzooError(describe(
                f"{folder} holds a model without a record of a resumable adaptation.",
                "a new -o folder, or --overwrite to replace it", output=str(folder)))
        mode = "complete"
    elif (folder / RUN_FILE).is_file():
        if not resume:
            state = _checkpoint_state(folder)
            raise EmzooError(describe(
                f"{folder} holds an interrupted adaptation (last checkpoint at step "
                f"{0 if state is None else state['step']}).",
                "--resume to continue it, --overwrite to start again, or a new -o folder",
                output=str(folder)))
        stored = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        mode = "resume"
    else:
        return "fresh", None
    _check_same_run(folder, stored, record,
                    [key for key in _IDENTITY if key != "base_weights_sha256"])
    return mode, stored


def _clear_run_folder(folder):
    """Removes what an earlier adaptation wrote in ``folder`` (``config.json`` first, so the folder
    stops being loadable before its weights go); other files are left alone."""
    for name in ("config.json", "model.weights.h5", RUN_FILE, CHECKPOINT_FILE):
        (folder / name).unlink(missing_ok=True)


def _save_checkpoint(folder, model, state, best_weights):
    """Writes weights, optimizer state, ``state`` and the best weights, atomically."""
    import h5py

    tmp = folder / ("tmp-" + CHECKPOINT_FILE)
    groups = {"weights": model.get_weights(),
              "optimizer": [np.asarray(variable) for variable in model.optimizer.variables],
              "best_weights": best_weights or []}
    with h5py.File(tmp, "w") as file:
        file.attrs["state"] = json.dumps(dict(state, has_best=best_weights is not None))
        for name, arrays in groups.items():
            group = file.create_group(name)
            for index, array in enumerate(arrays):
                group.create_dataset(f"{index:05d}", data=np.asarray(array))
    os.replace(tmp, folder / CHECKPOINT_FILE)


def _load_checkpoint(folder, model):
    """Restores weights and optimizer state into ``model``; returns ``(state, best_weights)``."""
    import h5py

    with h5py.File(folder / CHECKPOINT_FILE, "r") as file:
        state = json.loads(file.attrs["state"])
        arrays = {name: [file[name][key][()] for key in sorted(file[name])]
                  for name in ("weights", "optimizer", "best_weights")}
    variables = model.optimizer.variables
    if len(variables) != len(arrays["optimizer"]) or any(
            tuple(v.shape) != a.shape for v, a in zip(variables, arrays["optimizer"])):
        raise EmzooError(describe(
            f"The checkpoint in {folder} does not fit this model's optimizer.",
            "a checkpoint written by the same emzoo and Keras", checkpoint=str(folder)))
    model.set_weights(arrays["weights"])
    for variable, array in zip(variables, arrays["optimizer"]):
        variable.assign(array)
    return state, (arrays["best_weights"] if state.pop("has_best") else None)


class _HeldSignals:
    """SIGINT (Ctrl-C) and SIGTERM held while the training loop finishes its step.

    Handlers can only be set in the main thread; elsewhere (a napari worker) nothing is held.
    :meth:`deliver` puts the earlier handlers back and sends the first held signal again, so it
    ends the run as it would have without this (KeyboardInterrupt for Ctrl-C; the app's handler,
    or the default termination, for SIGTERM). A second signal while one is held goes through at
    once.
    """

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.pending = []
        self.previous = {}

    def __enter__(self):
        import signal
        import threading

        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handler = signal.getsignal(signum)
                if handler not in (None, signal.SIG_IGN):
                    self.previous[signum] = handler
                    signal.signal(signum, self._hold)
        return self

    def _hold(self, signum, frame):
        import signal

        if self.pending:
            self._restore()
            signal.raise_signal(signum)
        else:
            self.pending.append(signum)

    def _restore(self):
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def deliver(self):
        import signal

        self._restore()
        while self.pending:
            signal.raise_signal(self.pending.pop(0))

    def __exit__(self, kind, error, trace):
        if kind is None:
            self.deliver()
        self._restore()
        return False


def adapt(model, volume, factor=None, isotropic=False, minutes=None, steps=None, output=None,
          voxel_size=None, batch_size=8, crop=128, learning_rate=5e-5, validation_fraction=0.2,
          validation_batches=4, evaluate_every=25, seed=0, overwrite=False, resume=False,
          checkpoint_every=100, checkpoint_seconds=30.0, progress=True):
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
        voxel_size: ``(z, y, x)`` in nm when the file does not say (needed: it sets the gaps).
        overwrite: start again in ``output`` even if it holds a model or an interrupted run.
        resume: continue the interrupted run in ``output`` (or return it if it finished).
        checkpoint_every, checkpoint_seconds: a checkpoint every so many steps, and at least
            every so many seconds (only with ``output``).

    Returns:
        A dict: ``model`` (the adapted model, or the base weights when adaptation did not help),
        ``improved``, ``validation_before`` / ``validation_after`` (mean absolute error on the
        held-out triplets), ``steps``, ``best_step``, ``seconds``, ``gaps``, ``factor``,
        ``output``, ``resumed`` (the steps it resumed at: empty for a run never interrupted) and
        ``already_complete`` (``resume`` found the finished folder).
    """
    from emzoo.data.volumes import ArrayVolume, check_voxel_size, open_volume
    from emzoo.engine.positions import check_factor

    if minutes is None and steps is None:
        raise EmzooError(describe("No budget for the adaptation.", "minutes and/or steps",
                                  minutes=None, steps=None))
    if minutes is not None and not (isinstance(minutes, (int, float)) and minutes > 0):
        raise EmzooError(describe("Invalid value for argument `minutes`.", "a number > 0",
                                  minutes=minutes))
    steps = None if steps is None else check_integer("steps", steps)
    batch_size = check_integer("batch_size", batch_size)
    evaluate_every = check_integer("evaluate_every", evaluate_every)
    checkpoint_every = check_integer("checkpoint_every", checkpoint_every)
    if not (isinstance(checkpoint_seconds, (int, float)) and checkpoint_seconds > 0):
        raise EmzooError(describe("Invalid value for argument `checkpoint_seconds`.",
                                  "a number > 0", checkpoint_seconds=checkpoint_seconds))
    if resume and output is None:
        raise EmzooError(describe("Nothing to resume without an output folder.",
                                  "output=DIR (-o DIR) with resume", output=None))
    if resume and overwrite:
        raise EmzooError(describe("--resume and --overwrite exclude each other.",
                                  "--resume to continue DIR, or --overwrite to start again",
                                  resume=True, overwrite=True))
    folder = None if output is None else pathlib.Path(os.fspath(output)).expanduser()
    if isinstance(volume, np.ndarray):
        source = ArrayVolume(volume, voxel_size)
    else:
        source = volume if hasattr(volume, "read_crop") else open_volume(volume)
    voxel = check_voxel_size(voxel_size) or source.voxel_size
    if voxel is None:
        raise VolumeError(describe(
            "The voxel size is needed to choose the lateral triplets, and the file does not say.",
            "--voxel-size Z,Y,X in nm", voxel_size=None))
    if isotropic:
        factor = voxel[0] / voxel[2]
    factor = float(check_factor(2 if factor is None else factor))
    gaps = lateral_gaps(voxel[0], voxel[2], factor)
    block, _ = _read_block(source)

    record, mode, stored = None, "fresh", None
    if folder is not None:
        path = getattr(source, "path", None)
        record = json.loads(json.dumps({
            "input": str(path), "input_sha256": _file_digest(path or ""),
            "data_sha256": _array_digest(block), "factor": factor,
            "voxel_size": [float(v) for v in voxel], "budget": {"minutes": minutes, "steps": steps},
            "batch_size": batch_size, "crop": crop, "learning_rate": learning_rate,
            "validation_fraction": validation_fraction, "validation_batches": validation_batches,
            "evaluate_every": evaluate_every, "seed": seed}))
        mode, stored = _prepare_output(folder, record, resume, overwrite)

    import keras  # after the checks above, which need no TensorFlow

    from emzoo import zoo

    base = zoo.load(model, compile=False) if isinstance(model, (str, os.PathLike)) else model
    entry = dict(getattr(base, "zoo_entry", {}) or {})
    if record is not None:
        record["base_model"] = entry.get("name", getattr(base, "name", None))
        record["base_weights_sha256"] = _model_digest(base)
        if mode != "fresh":
            _check_same_run(folder, stored, record, ["base_weights_sha256"])
    if mode == "complete":
        return _finished_report(folder, stored)

    adapted = base.__class__.from_config(base.get_config())
    adapted.build_for_weights()
    adapted.set_weights(base.get_weights())
    adapted.zoo_entry = entry
    adapted.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                    loss="mean_absolute_error", metrics=[])
    adapted.optimizer.build(adapted.trainable_variables)  # its slots exist before a restore

    triplets = LateralTriplets(block, voxel[0] / voxel[2], gaps, crop, validation_fraction)
    min_crop = MIN_CROP_MULTIPLES * int(getattr(adapted, "size_multiple", 1) or 1)
    too_thin = triplets.crop < min_crop
    skipped = (f"not adapted: {block.shape[0]} input slices make lateral planes of "
               f"{triplets.stretched_depth} rows at this spacing, too few for the model's "
               f"{min_crop}-pixel crops; base model kept") if too_thin else None
    held_rng = np.random.default_rng([seed, 0])
    held_out = [triplets.batch(held_rng, batch_size, adapted.channels, held_out=True)
                for _ in range(validation_batches)]
    state, best_weights = None, None
    if mode == "resume":
        if (folder / CHECKPOINT_FILE).is_file():
            state, best_weights = _load_checkpoint(folder, adapted)
        else:   # killed before its first checkpoint: it starts again, recorded as resumed
            state = {"resumed_at": []}
        state["resumed_at"] = state["resumed_at"] + [state.get("step", 0)]
    if state is None or "step" not in state:
        before = _mean_abs_error(adapted, held_out)
        state = {"step": 0, "seconds": 0.0, "before": before, "best_score": before,
                 "best_step": 0, "evaluated_step": 0,
                 "resumed_at": [] if state is None else state["resumed_at"]}
    if folder is not None and mode == "fresh":
        if overwrite:
            _clear_run_folder(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / RUN_FILE, record)

    def evaluate():
        score = _mean_abs_error(adapted, held_out)
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

    bar = _progress(steps, minutes, progress, already=spent_before)
    last_checkpoint = session_start
    with _HeldSignals(enabled=folder is not None) as held:
        while (not too_thin and (steps is None or state["step"] < steps)
               and (budget is None or spent() < budget)):
            batch = triplets.batch(np.random.default_rng([seed, 1, state["step"]]), batch_size,
                                   adapted.channels)
            adapted.train_on_batch(*batch)
            state["step"] += 1
            if state["step"] % evaluate_every == 0:
                best_weights = evaluate()
            bar(state["step"], state["best_score"])
            now = time_lib.monotonic()
            if folder is not None and (state["step"] % checkpoint_every == 0 or held.pending
                                       or now - last_checkpoint >= checkpoint_seconds):
                state["seconds"] = spent()
                _save_checkpoint(folder, adapted, state, best_weights)
                last_checkpoint = time_lib.monotonic()
            if held.pending:
                held.deliver()   # raises (KeyboardInterrupt) or ends the process, as asked
        if state["step"] > state["evaluated_step"]:
            best_weights = evaluate()
        state["seconds"] = spent()
        improved = best_weights is not None
        adapted.set_weights(best_weights if improved else base.get_weights())
        bar(None, state["best_score"])
        report = {"model": adapted, "improved": improved,
                  "validation_before": state["before"], "validation_after": state["best_score"],
                  "steps": state["step"], "best_step": state["best_step"],
                  "seconds": state["seconds"], "gaps": gaps, "factor": factor, "output": None,
                  "resumed": state["resumed_at"], "already_complete": False, "skipped": skipped}
        if folder is not None:
            metadata = dict(entry.get("metadata", {}))
            metadata["adaptation"] = dict(
                record, lateral_gaps=gaps, steps_run=state["step"], best_step=state["best_step"],
                seconds=state["seconds"],
                self_validation_mae={"before": state["before"], "after": state["best_score"]},
                replaced_base_weights=improved, skipped=skipped, resumed=bool(state["resumed_at"]),
                resumed_at_steps=state["resumed_at"])
            # The weights first, config.json last (by rename): loadable only when complete.
            zoo.save(adapted, folder, name=folder.name, metadata=metadata, overwrite=True)
            for name in (CHECKPOINT_FILE, RUN_FILE):
                (folder / name).unlink(missing_ok=True)
            report["output"] = str(folder)
    return report


def _finished_report(folder, record):
    """The report of an adaptation whose folder is complete (``resume`` of a finished run)."""
    from emzoo import zoo

    for name in (CHECKPOINT_FILE, RUN_FILE):   # left if it was killed while cleaning up
        (folder / name).unlink(missing_ok=True)
    scores = record["self_validation_mae"]
    return {"model": zoo.load(str(folder), compile=False),
            "improved": record["replaced_base_weights"], "validation_before": scores["before"],
            "validation_after": scores["after"], "steps": record["steps_run"],
            "best_step": record["best_step"], "seconds": record["seconds"],
            "gaps": record["lateral_gaps"], "factor": record["factor"], "output": str(folder),
            "resumed": record["resumed_at_steps"], "already_complete": True,
            "skipped": record.get("skipped")}


def _progress(steps, minutes, enabled, already=0.0):
    """A progress callback ``(step, best) -> None`` on stderr (``step=None`` ends the line);
    ``already``: seconds spent before a resume."""
    import sys

    if not enabled:
        return lambda step, best: None
    total = f"/{steps}" if steps is not None else ""
    budget = f" of {minutes:g} min" if minutes is not None else ""
    start = time_lib.monotonic() - already
    tty = sys.stderr.isatty()
    last = [0.0]

    def show(step, best):
        now = time_lib.monotonic()
        if step is None:
            if tty:
                sys.stderr.write("\n")
            return
        if not tty and now - last[0] < 30.0:
            return
        last[0] = now
        line = (f"adapt: step {step}{total}, {now - start:.0f} s{budget}, "
                f"best held-out error {best:.4f}")
        sys.stderr.write(("\r" + line) if tty else (line + "\n"))
        sys.stderr.flush()

    return show
