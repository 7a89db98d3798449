"""The volume engine: z-upscaling and slice repair of whole volumes with any emzoo interpolator.

How a volume is upscaled by a factor ``F`` (a number >= 1, e.g. 2, 4, 3, 2.5, or the ratio of the z
spacing to the x spacing for ``isotropic=True``):

1. **Dense grid by recursive midpoints.** ``P`` = the smallest power of two >= ``F``. Between each
   pair of neighbouring input slices the model predicts the midpoint (``time = 0.5``), then the
   midpoints of each half, and so on, ``log2(P)`` levels deep, giving the dense grid of
   ``(N - 1) * P + 1`` slices at z = k / P (in input-slice units). Input slices are part of the
   grid unchanged.
2. **Exact target positions.** The output has ``M = floor((N - 1) * F) + 1`` slices at
   z = j / F, j = 0 .. M - 1 (its z spacing is the input spacing / F). A position that falls on the
   dense grid takes that slice; any other position is linearly interpolated between the two
   nearest dense slices (weights by distance along z). For a power-of-two ``F`` every output slice
   is on the grid, so the output is exactly ``(N - 1) * F + 1`` slices and the first and last
   input slices are kept unchanged (bit for bit: input slices are copied, never re-quantised).
   For other factors, the last output slice lies at or before the last input slice (it is the last
   input slice whenever ``(N - 1) * F`` is a whole number). Resampling is along z only: each slice
   keeps its (Y, X) shape, square or not.
3. **Calibration towards linear.** Before the job, the model is weighed against linear
   interpolation on the input itself, one weight per recursion level
   (:mod:`~emzoo.engine.calibration`); each level's midpoints lean towards their pair's mean by
   it (``calibrate=False``: the model's midpoints as they are).

Slices are normalised by their dtype's range, never per slice (float data outside ``[0, 1]`` by
the volume's own range; see :mod:`emzoo.data.volumes.base`), and written back in the input dtype
(uint8, uint16 or float32) and range, with the voxel size's z spacing divided by ``F``. The output
size is checked before any work (:func:`~emzoo.engine.sources.check_output_size`). Large slices are processed in overlapping tiles blended back seamlessly
(``tile``, ``overlap``). Jobs stream: input slices are read as needed and output slices written in
order, so memory does not grow with the number of slices. Outputs go through
:func:`emzoo.data.volumes.create_volume`: a temporary name renamed when complete; an existing
output is never replaced without ``overwrite=True``. Pairs (and tiles) go through the model in
batches, and FILM's features are computed once per slice and reused.

Modules, one role each:

- :mod:`~emzoo.engine.positions`: the factor (parsed and checked here, for evaluation too), the
  output positions and the dense grid;
- :mod:`~emzoo.engine.tiler`: tiles and their blending;
- :mod:`~emzoo.engine.midpoint`: the midpoint engine (pairs, feature reuse, batching);
- :mod:`~emzoo.engine.policy`: batch size, XLA policy and compiled model calls;
- :mod:`~emzoo.engine.sources`: checks of the input volume, voxel size and output path;
- :mod:`~emzoo.engine.plan`: the job plan (:func:`plan_upscale`, :func:`plan_repair`,
  :class:`EngineOptions`, :class:`Blockwise`): every setting of a job, checked once;
- :mod:`~emzoo.engine.runner`: :func:`run` (a plan with a model, on one process or on Dask) and
  its :class:`JobResult`;
- :mod:`~emzoo.engine.job`: what both jobs share (input checks, resampling, writing, summary);
- :mod:`~emzoo.engine.upscale`, :mod:`~emzoo.engine.repair`: the two jobs' slices, and
  ``upscale_volume`` / ``repair_volume``, the one-call forms of plan then run;
- :mod:`~emzoo.engine.blocks`: the blockwise plan (blocks of whole output chunks, what each reads,
  the (y, x) halo) and the computation of one block;
- :mod:`~emzoo.engine.distributed`: the blockwise engine on Dask (``workers=N`` /
  ``scheduler=ADDRESS``, ``resume=True``), the job as the client runs it;
  :mod:`~emzoo.engine.cluster`: starting or connecting to the cluster;
  :mod:`~emzoo.engine.worker`: what runs in each worker process; :mod:`~emzoo.engine.records`:
  the blocks' completion records;
- :mod:`~emzoo.engine.quiet`: TensorFlow's start-up lines off the terminal (the apps' process and
  the local Dask workers);
- :mod:`~emzoo.engine.progress`, :mod:`~emzoo.engine.memory`: the progress bar, ``malloc_trim``.

Volumes of any size: ``upscale_volume(..., output="out.ome.zarr", workers=N)`` runs the same job
blockwise on N local Dask worker processes (or ``scheduler=`` an existing cluster), writing each
block's own chunks of a Zarr / OME-Zarr / N5 output in place; the output is marked complete only
when every block is recorded, ``resume=True`` continues a killed job, and the result equals this
single-process engine's with the same ``tile`` and ``overlap``.

Importing the engine imports NumPy only; Keras and the backend are imported when a model runs.

A job is planned, then run: the plan checks everything before any work (and the apps make it
before loading a model, so a typo costs no start-up); the same plan runs on one process or on Dask
and reports progress to a bar or a callback::

    plan = plan_upscale("stack.tif", factor=4, output="iso.tif",
                        options=EngineOptions(tile=1024, precision="auto"))
    result = run(plan, "default", progress=lambda done, total: ..., cancel=threading.Event())

Example:
    >>> import emzoo, numpy as np
    >>> model = emzoo.load("default")                                   # doctest: +SKIP
    >>> stack = np.zeros((5, 64, 96), np.uint8)
    >>> result = emzoo.upscale_volume(stack, model, factor=4)           # doctest: +SKIP
    >>> result["array"].shape                                           # doctest: +SKIP
    (17, 64, 96)
    >>> emzoo.upscale_volume("stack.tif", "default", isotropic=True, output="iso.tif")  # doctest: +SKIP
"""

from emzoo.engine.midpoint import MidpointEngine
from emzoo.engine.plan import Blockwise, EngineOptions, JobPlan, plan_repair, plan_upscale
from emzoo.engine.policy import default_batch_size, resolve_jit_compile
from emzoo.engine.positions import check_factor, parse_factor, parse_slices, upscale_positions
from emzoo.engine.progress import Progress
from emzoo.engine.repair import repair_volume
from emzoo.engine.result import JobResult
from emzoo.engine.runner import run
from emzoo.engine.sources import parse_voxel_size
from emzoo.engine.tiler import Tiler
from emzoo.engine.upscale import upscale_volume

# The public API; the parts (MidpointEngine, Tiler, Progress, ...) stay importable from their
# modules for those who build on them.
__all__ = ["Blockwise", "EngineOptions", "JobPlan", "JobResult", "parse_factor", "parse_slices",
           "parse_voxel_size", "plan_repair", "plan_upscale", "repair_volume", "run",
           "upscale_volume"]
