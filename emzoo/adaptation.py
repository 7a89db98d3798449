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
better, and the best weights seen during training are kept (early stopping).

The result is a folder :func:`emzoo.load` reads, whose metadata records the base model, the input
(path and sha256), the budget and the self-validation scores before and after.

Example:
    >>> import emzoo
    >>> report = emzoo.adapt("default", "stack.tif", factor=4, minutes=5,
    ...                      output="runs/adapted")            # doctest: +SKIP
    >>> model = emzoo.load("runs/adapted")                     # doctest: +SKIP
"""

import math
import os
import pathlib
import time as time_lib

import numpy as np

from emzoo.errors import EmzooError, VolumeError, check_integer, describe

# The largest (y, x) window read from the volume: adaptation needs texture, not the whole slice.
MAX_EXTENT = 512


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
    """``(Z, L)`` plane resampled along z by linear interpolation to ``round((Z - 1) * ratio) + 1`` rows."""
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


def _read_block(volume):
    """The normalised ``(Z, Y, X)`` block (centre window of at most MAX_EXTENT) and its voxel size."""
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


def adapt(model, volume, factor=None, isotropic=False, minutes=None, steps=None, output=None,
          voxel_size=None, batch_size=8, crop=128, learning_rate=5e-5, validation_fraction=0.2,
          validation_batches=4, evaluate_every=25, seed=0, overwrite=False, progress=True):
    """Fine-tunes a copy of ``model`` on lateral triplets of ``volume`` (see the module docstring).

    Args:
        model: a registered name, a saved folder, or a loaded emzoo model (it is not modified).
        volume: a path (``stack.tif``, ``file.h5:/raw``, a folder) or an opened volume.
        factor: the upscaling factor the model will be used for (sets the lateral gaps).
        isotropic: the factor is the z spacing over the x spacing.
        minutes, steps: the budget (wall time and/or optimizer steps; at least one).
        output: folder to write the adapted model to (``emzoo.load(output)``), or None.
        voxel_size: ``(z, y, x)`` in nm when the file does not say (needed: it sets the gaps).

    Returns:
        A dict: ``model`` (the adapted model, or the base weights when adaptation did not help),
        ``improved``, ``validation_before`` / ``validation_after`` (mean absolute error on the
        held-out triplets), ``steps``, ``seconds``, ``gaps``, ``output``.
    """
    import keras

    from emzoo import zoo
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
    if output is not None and (pathlib.Path(output) / "config.json").exists() and not overwrite:
        raise EmzooError(describe(f"{output} already holds a model.",
                                  "a new folder, or --overwrite to replace it", output=str(output)))
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

    base = zoo.load(model, compile=False) if isinstance(model, (str, os.PathLike)) else model
    entry = dict(getattr(base, "zoo_entry", {}) or {})
    adapted = base.__class__.from_config(base.get_config())
    adapted.build_for_weights()
    adapted.set_weights(base.get_weights())
    adapted.zoo_entry = entry
    adapted.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                    loss="mean_absolute_error", metrics=[])

    triplets = LateralTriplets(block, voxel[0] / voxel[2], gaps, crop, validation_fraction)
    held_rng = np.random.default_rng(seed + 1)
    held_out = [triplets.batch(held_rng, batch_size, adapted.channels, held_out=True)
                for _ in range(validation_batches)]
    before = _mean_abs_error(adapted, held_out)
    best_score, best_weights, best_step = before, None, 0

    rng = np.random.default_rng(seed)
    start = time_lib.monotonic()
    deadline = None if minutes is None else start + 60.0 * minutes
    bar = _progress(steps, minutes, progress)
    step = 0
    while (steps is None or step < steps) and (deadline is None or time_lib.monotonic() < deadline):
        adapted.train_on_batch(*triplets.batch(rng, batch_size, adapted.channels))
        step += 1
        bar(step, best_score)
        last = (steps is not None and step == steps) or (
            deadline is not None and time_lib.monotonic() >= deadline)
        if step % evaluate_every == 0 or last:
            score = _mean_abs_error(adapted, held_out)
            if score < best_score:
                best_score, best_weights, best_step = score, adapted.get_weights(), step
    seconds = time_lib.monotonic() - start
    improved = best_weights is not None
    adapted.set_weights(best_weights if improved else base.get_weights())
    bar(None, best_score)

    report = {"model": adapted, "improved": improved, "validation_before": before,
              "validation_after": best_score, "steps": step, "best_step": best_step,
              "seconds": seconds, "gaps": gaps, "factor": factor, "output": None}
    if output is not None:
        metadata = dict(entry.get("metadata", {}))
        metadata["adaptation"] = {
            "base_model": entry.get("name", getattr(base, "name", None)),
            "input": str(getattr(source, "path", volume)),
            "input_sha256": _file_digest(getattr(source, "path", "")),
            "budget": {"minutes": minutes, "steps": steps},
            "steps_run": step, "best_step": best_step, "lateral_gaps": gaps, "factor": factor,
            "self_validation_mae": {"before": before, "after": best_score},
            "replaced_base_weights": improved,
        }
        name = pathlib.Path(output).name
        zoo.save(adapted, output, name=name, metadata=metadata, overwrite=overwrite)
        report["output"] = str(output)
    return report


def _progress(steps, minutes, enabled):
    """A progress callback ``(step, best) -> None`` on stderr (``step=None`` ends the line)."""
    import sys

    if not enabled:
        return lambda step, best: None
    total = f"/{steps}" if steps is not None else ""
    budget = f" of {minutes:g} min" if minutes is not None else ""
    start = time_lib.monotonic()
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
