"""A volume job's result: :class:`JobResult`, the same on one process and on Dask."""

import dataclasses

from emzoo.engine.job import summary_line


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What a volume job did: the same fields with or without an output path, on either engine.

    ``output`` (the path written, or ``None``), ``array`` (the result when there is no output
    path, else ``None``), ``input_shape``, ``output_shape``, ``dtype``, ``voxel_size`` (the
    output's, or ``None``), ``precision`` (the one the model ran in), ``seconds``, ``summary``
    (one line), ``factor`` and ``residual_scales`` (upscaling: the weight of the model against
    linear interpolation at each recursion level, fitted on the input,
    :mod:`~emzoo.engine.calibration`; ``None`` when not calibrated) or ``repaired`` (repair: the
    replaced indices); the
    blockwise engine adds ``blocks``, ``computed``, ``skipped`` (recorded by an earlier run),
    ``workers``, ``threads`` (TensorFlow threads per worker, ``None`` when the cluster sets them)
    and ``already_complete``.
    """

    output: object
    array: object
    input_shape: tuple
    output_shape: tuple
    dtype: str
    voxel_size: tuple | None
    precision: str
    seconds: float
    summary: str
    factor: float | None = None
    repaired: list | None = None
    blocks: int | None = None
    computed: int | None = None
    skipped: int | None = None
    workers: int | None = None
    threads: int | None = None
    already_complete: bool = False
    residual_scales: tuple | None = None

    def to_dict(self):
        """The result as the dict :func:`~emzoo.engine.upscale_volume` returns (only the entries
        that apply: ``factor`` or ``repaired``; the blockwise ones on Dask)."""
        entries = {"output": self.output, "array": self.array, "input_shape": self.input_shape,
                   "output_shape": self.output_shape, "dtype": self.dtype,
                   "voxel_size": self.voxel_size}
        entries.update({"factor": self.factor, "residual_scales": self.residual_scales}
                       if self.factor is not None else
                       {"repaired": self.repaired} if self.repaired is not None else {})
        entries.update(precision=self.precision, seconds=self.seconds, summary=self.summary)
        if self.blocks is not None:
            entries.update(blocks=self.blocks, computed=self.computed, skipped=self.skipped,
                           workers=self.workers, threads=self.threads,
                           already_complete=self.already_complete)
        return entries


def result(plan, precision, seconds, array=None, summary=None, **blockwise):
    """The :class:`JobResult` of ``plan`` (``summary``: the line, when not the usual one)."""
    if summary is None:
        summary = summary_line(plan.kind, plan.input_shape, plan.output_shape, plan.dtype,
                               plan.input_voxel_size, plan.output_voxel_size, seconds, plan.output)
    extra = plan.extra()
    return JobResult(output=plan.output, array=array, input_shape=tuple(plan.input_shape),
                     output_shape=tuple(plan.output_shape), dtype=plan.dtype,
                     voxel_size=plan.output_voxel_size, precision=precision, seconds=seconds,
                     summary=summary, factor=extra.get("factor"), repaired=extra.get("repaired"),
                     residual_scales=plan.options.residual_scales if plan.job == "upscale" else None,
                     **blockwise)
