"""``run(plan, model)``: a checked job plan run with a model, on one process or on Dask.

The same plan runs either way (:class:`~emzoo.engine.plan.JobPlan`, its ``blockwise`` field
decides); both give the same :class:`JobResult`. Progress goes to a bar on stderr, nowhere, or a
callback; a ``cancel`` event (anything with ``is_set()``, e.g. :class:`threading.Event`) stops
the job between two slices (between two blocks on Dask).

Example:
    >>> import threading
    >>> plan = plan_upscale("stack.tif", factor=4, output="iso.tif")      # doctest: +SKIP
    >>> stop = threading.Event()
    >>> result = run(plan, "default", progress=lambda done, total: None, cancel=stop)  # doctest: +SKIP
    >>> result.output_shape                                              # doctest: +SKIP
    (117, 512, 512)
"""

from emzoo.engine.calibration import calibrate_plan
from emzoo.engine.job import write_slices
from emzoo.engine.interpolators import midpoint_engine, resolve_model
from emzoo.engine.plan import JobPlan
from emzoo.engine.result import result
from emzoo.engine.slices import repaired_slices, upscaled_slices
from emzoo.errors import EmzooError, describe


def run(plan, model, progress=True, cancel=None):
    """Runs the job ``plan`` with ``model``; returns its :class:`JobResult`.

    Args:
        plan: a :class:`~emzoo.engine.plan.JobPlan` (:func:`~emzoo.engine.plan_upscale`,
            :func:`~emzoo.engine.plan_repair`).
        model: an emzoo interpolator, a registered name or saved model folder (loaded with its
            trained weights), or ``"flow"`` (the optical-flow baseline).
        progress: ``True`` draws a progress bar on stderr, ``False`` nothing, and a callable is
            called as ``progress(done, total)`` (slices; blocks on Dask).
        cancel: an event (``is_set()``); once set, the job stops between two slices (blocks) and
            raises :class:`~emzoo.errors.JobCancelled`: nothing is left behind by a
            single-process job, a blockwise output stays incomplete (resumable).

    Example:
        >>> run(plan_repair(stack, [12, 13]), "default").repaired           # doctest: +SKIP
        [12, 13]
    """
    if not isinstance(plan, JobPlan):
        raise EmzooError(describe("Invalid value for argument `plan`.",
                                  "a JobPlan from plan_upscale or plan_repair",
                                  plan=type(plan).__name__))
    if plan.blockwise is not None:
        from emzoo.engine.distributed import run_blockwise

        return run_blockwise(plan, model, progress, cancel)
    model = resolve_model(model)
    plan = calibrate_plan(plan, model)
    source = plan.open_input()
    options = plan.options
    engine = midpoint_engine(model, plan.input_shape[1], plan.input_shape[2],
                             options.tile, options.overlap, batch_size=options.batch_size,
                             reuse_features=options.reuse_features, jit_compile=options.xla,
                             expected_pairs=plan.expected_pairs, precision=options.precision)
    if plan.job == "upscale":
        slices = upscaled_slices(plan, source, engine)
    else:
        slices = repaired_slices(plan, source, engine)
    array, seconds = write_slices(plan, slices, progress, cancel)
    return result(plan, engine.precision, seconds, array=array)
