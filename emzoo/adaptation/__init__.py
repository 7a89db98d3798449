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
along x: planes from the last ``val_fraction`` of the x range (and y-planes cropped to it)
are held out. Both the base weights and the adapted ones are scored on the same fixed held-out
triplets (mean squared error, or absolute with ``loss="l1"``), and the best weights seen during
training are kept (early stopping). They replace the base ones only if they score better there,
by at least ``MIN_GAIN_DB`` (smaller gains did not carry over to the dropped slices; the report's
``vetoed`` says when). The error on the input's own axial triplets (slices ``z - 1, z, z + 1``,
:func:`~emzoo.adaptation.lateral.axial_batches`) is reported, not used to decide: it approved
weights that lowered PSNR on the dropped slices and rejected weights that raised it
(measurements in benchmarks/README.md).

**Where self-validation cannot be trusted, nothing is adapted** (the report's ``skipped`` says
why, and the base model is kept): an input whose z spacing is outside ``STRETCH_RANGE`` times
its x spacing (at 2x and 8x both self-validations approved weights that lowered PSNR on the
dropped slices; at 4x adaptation helped or was neutral), and a short input whose
stretched planes allow only crops smaller than ``MIN_CROP_MULTIPLES`` times the model's size
multiple (self-validation on such crops approved weights that were worse on the real task).

**Only the input is read.** Everything comes from one centre window (at most ``MAX_EXTENT``
pixels square) of the given volume, read once; the result is a function of those pixels, the
voxel size, the base weights and the settings. Adapting on the kept slices of a longer stack is
therefore blind to the dropped ones (``tests/adaptation/test_fine_tune.py`` checks the files
opened).

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
:func:`~emzoo.adaptation.fine_tune.adapt_beside_output` is the call ``emzoo upscale --adapt``
makes: the run folder is ``OUTPUT.adapted`` beside the output, resumed or reused when the same job
runs again.

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

Where things are: :mod:`~emzoo.adaptation.lateral` (the triplets and their gaps),
:mod:`~emzoo.adaptation.fine_tune` (the loop, self-validation, :func:`adapt`),
:mod:`~emzoo.adaptation.run_folder` (record, checkpoints, resume, signals).

Example:
    >>> import emzoo
    >>> report = emzoo.adapt("default", "stack.tif", factor=4, minutes=5,
    ...                      output="runs/adapted")            # doctest: +SKIP
    >>> # killed? the same call with resume=True continues it:
    >>> report = emzoo.adapt("default", "stack.tif", factor=4, minutes=5,
    ...                      output="runs/adapted", resume=True)  # doctest: +SKIP
    >>> model = emzoo.load("runs/adapted")                     # doctest: +SKIP
"""

from emzoo.adaptation.fine_tune import adapt, adapt_beside_output, describe_report
from emzoo.adaptation.lateral import LateralTriplets, lateral_gaps, stretch_along_z
from emzoo.adaptation.run_folder import CHECKPOINT_FILE, RUN_FILE, folder_beside, run_state

__all__ = ["LateralTriplets", "adapt", "adapt_beside_output", "describe_report", "lateral_gaps",
           "stretch_along_z"]
