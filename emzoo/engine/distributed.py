"""The blockwise engine on Dask: upscale and repair chunked volumes with many worker processes,
resumable after any crash, and never silently incomplete. This module is the job as the client
runs it; :mod:`~emzoo.engine.cluster` starts or connects to the cluster, and
:mod:`~emzoo.engine.worker` is what runs in each worker process.

A plan with ``blockwise=Blockwise(workers=N)`` (:mod:`~emzoo.engine.plan`) runs on a new local
cluster of N worker processes, closed at the end, also on errors and Ctrl-C;
``Blockwise(scheduler="tcp://host:8786")`` runs on an existing cluster instead. The plan has
checked the request already (a Zarr, OME-Zarr or N5 output, written in place whole chunks at a
time: :func:`~emzoo.data.volumes.open_regions`; an input path the workers open themselves). A job:

1. checks what only a cluster can say before writing anything: the scheduler answers, and every
   worker loads the model;
2. creates the output empty, marked ``{"complete": false, "plan": ...}`` in its metadata
   (:meth:`~emzoo.data.volumes.chunked.ChunkedVolumeWriter.publish_incomplete`; the record
   is :meth:`~emzoo.engine.plan.JobPlan.record`);
3. submits one task per block of the :class:`~emzoo.engine.blocks.BlockPlan` (retried up to
   :data:`RETRIES` times on errors; redone when its worker dies), each carrying the plan's JSON
   and computing its block, writing its own chunks and then its completion record
   (:func:`~emzoo.engine.worker.run_block`); progress counts blocks, with an ETA;
4. marks the output complete once every block is recorded.

``Blockwise(resume=True)`` reopens the output a killed job left behind, checks that this job's
record (input path, shape and dtype; factor or slices; model; tile and overlap; precision; output
shape, dtype, voxel size, chunks and blocks) is the one it was started with (one line naming what
differs), and submits only the blocks without a record; on a complete output it does nothing.
Results equal the single-process engine's with the same options (see
:mod:`~emzoo.engine.blocks` for the halo); both choose the tile alike
(:meth:`~emzoo.engine.plan.EngineOptions.for_slices`). A job that stops early raises a typed
error that names the output it keeps: :class:`~emzoo.errors.IncompleteOutputError` (a block
failed), :class:`~emzoo.errors.JobInterrupted` (Ctrl-C), :class:`~emzoo.errors.JobCancelled`.

A model given in memory (a Keras model, e.g. after adaptation) is saved into the output's side
folder for the workers to load; the sha256 of its weights stands for it in the record. Every
worker must resolve the precision alike (``"auto"`` is decided per machine), or the job is refused.

Dask is imported when a job runs (``pip install 'emzoo[dask]'``).

Example:
    >>> emzoo.upscale_volume("in.zarr", "default", factor=4, output="out.zarr", workers=2)  # doctest: +SKIP
    >>> emzoo.upscale_volume("in.zarr", "default", factor=4, output="out.zarr", workers=2,
    ...                      resume=True)["skipped"]                                       # doctest: +SKIP
    96
"""

import dataclasses
import hashlib
import os
import shutil
import time
import uuid

import numpy as np

from emzoo.data.volumes import create_volume, open_regions, split_container_path
from emzoo.data.volumes.chunked import default_chunks
from emzoo.engine.blocks import BlockPlan
from emzoo.engine.calibration import calibrate_plan
from emzoo.engine.cluster import local_threads, open_client
from emzoo.engine.interpolators import resolve_model
from emzoo.engine.job import summary_line
from emzoo.engine.plan import _absolute
from emzoo.engine.progress import job_progress
from emzoo.engine.records import BlockRecords
from emzoo.engine.tiler import Tiler
from emzoo.engine.worker import prepare_worker, run_block
from emzoo.errors import (EmzooError, IncompleteOutputError, JobCancelled, JobInterrupted, VolumeError,
                          describe, one_line)

RETRIES = 3  # attempts after a task's first failure


def run_blockwise(plan, model, progress=True, cancel=None):
    """Runs the checked blockwise job ``plan`` on Dask; returns its
    :class:`~emzoo.engine.result.JobResult` (see the module's docstring).

    :func:`emzoo.engine.run` calls this for a plan with ``blockwise``; ``model`` is a registered
    name, a saved model folder, ``"flow"``, or a Keras model (saved for the workers into the
    output's side folder); ``progress`` and ``cancel`` as there, counted in blocks.

    Example:
        >>> plan = plan_upscale("in.zarr", 2, "out.zarr", blockwise=Blockwise(workers=2))  # doctest: +SKIP
        >>> run_blockwise(plan, "default").computed                                   # doctest: +SKIP
        30
    """
    from emzoo.engine.result import result

    start = time.perf_counter()
    blockwise, options = plan.blockwise, plan.options
    spec, in_memory, model_id = _model_spec(model, options)
    output = _absolute(plan.output)
    store = split_container_path(output)[0]
    records = BlockRecords(store)
    regions = _reopen(output) if blockwise.resume and os.path.exists(store) else None
    started = (regions.marker.get("plan") or {}) if regions is not None else {}
    block_size, chunks = blockwise.block_size, plan.chunks
    if regions is not None:  # what the started job chose, unless given again (then checked)
        stored = started.get("blocks", {}).get("block_shape")
        if block_size is None and isinstance(stored, list) and len(stored) == 3:
            block_size = tuple(stored[1:])
        chunks = regions.chunks if chunks is None else chunks
    if regions is not None:  # the weights the started job fitted (none before they existed)
        scales = started.get("residual_scales")
        plan = dataclasses.replace(plan, options=dataclasses.replace(
            options, calibrate=False, residual_scales=scales))
    else:
        plan = calibrate_plan(plan, resolve_model(model) if in_memory is None else in_memory)
    options = plan.options
    shape = plan.output_shape
    blocks = BlockPlan(shape, default_chunks(shape, plan.dtype, chunks, output, buffered=False),
                       Tiler(shape[1], shape[2], options.tile, options.overlap), block_size)
    record = plan.record(model_id, blocks)
    done = set()
    if regions is not None:
        _check_plan(started or None, record, plan.output)
        if regions.marker.get("complete") is True:
            return result(plan, options.precision, time.perf_counter() - start,
                          summary=f"{plan.kind}: {plan.output} is already complete; nothing to do",
                          blocks=len(blocks), computed=0, skipped=len(blocks),
                          already_complete=True)
        done = records.done() & set(range(len(blocks)))
    workers = blockwise.workers
    task = {"job": uuid.uuid4().hex, "plan": _for_workers(plan, options.precision), "model": spec,
            "threads": None if workers is None else local_threads(workers)}
    with open_client(workers, blockwise.scheduler, task["threads"]) as client:
        prepared = _prepare(client, task) if spec is not None else None  # before writing anything
        created = regions is None
        if created:
            writer = create_volume(plan.output, shape, plan.dtype, plan.output_voxel_size,
                                   overwrite=plan.overwrite, chunks=blocks.chunks)
            writer.publish_incomplete({"plan": record})
            regions = _reopen(output)
        try:
            if in_memory is not None:
                try:
                    task["model"] = _save_for_workers(in_memory, records.side)
                    prepared = _prepare(client, task)
                except EmzooError:
                    if created:  # no block was computed: leave nothing behind
                        shutil.rmtree(store, ignore_errors=True)
                    raise
            resolved = _same_precision(prepared, options.precision)
            task["plan"] = _for_workers(plan, resolved)  # every worker alike
            todo = [block for block in blocks if block.id not in done]
            _run(client, task, todo, plan.job, progress, cancel, plan.output)
        except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM: the output is kept, resumable
            raise JobInterrupted(plan.output) from stop
        missing = set(range(len(blocks))) - records.done()
        if missing:
            raise IncompleteOutputError(plan.output, (
                f"{len(missing)} block(s) finished without their completion records (the first: "
                f"block {min(missing)}); the file system did not keep the files written."))
        regions.set_marker({"complete": True, "plan": record})
        records.clear()
        count = workers if workers is not None else len(client.nthreads())
    threads = task["threads"]
    where = (f"{count} worker(s), {threads} TensorFlow thread(s) each" if threads is not None
             else f"{count} worker(s) of {blockwise.scheduler}, threads as the cluster sets them")
    kind = (f"{plan.kind} on Dask ({where}; {len(blocks)} blocks: {len(todo)} computed, "
            f"{len(done)} skipped as finished before)")
    seconds = time.perf_counter() - start
    line = summary_line(kind, plan.input_shape, shape, plan.dtype, plan.input_voxel_size,
                        plan.output_voxel_size, seconds, plan.output)
    return result(plan, resolved, seconds, summary=line, blocks=len(blocks), computed=len(todo),
                  skipped=len(done), workers=count, threads=threads, already_complete=False)


def _for_workers(plan, precision):
    """The plan's JSON as the workers get it: its output path absolute (they may run elsewhere)
    and its precision the resolved one (``"auto"`` is decided per machine)."""
    import dataclasses

    options = dataclasses.replace(plan.options, precision=precision)
    return dataclasses.replace(plan, output=_absolute(plan.output), options=options).to_json()


def _model_spec(model, options):
    """``(spec the workers load, in-memory Keras model or None, the plan's name for it)``, checked."""
    if isinstance(model, (str, os.PathLike)):
        from emzoo.engine.interpolators import SEPARATOR, check_model_spec, ensemble_names

        # unknown names and missing weights: one line, before any work
        options.check_tile(check_model_spec(model)[0])
        folders = [os.path.expanduser(name) for name in ensemble_names(model) or [os.fspath(model)]]
        spec = SEPARATOR.join(os.path.abspath(f) if os.path.isdir(f) else f for f in folders)
        return spec, None, spec
    import keras

    if not isinstance(model, keras.Model):
        raise EmzooError(describe("The blockwise engine runs models its workers can load.",
                                  "a registered name, a saved model folder, 'flow', or a Keras model",
                                  model=type(model).__name__))
    options.check_tile(getattr(model, "size_multiple", 1))
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return None, model, f"in-memory {type(model).__name__} (weights sha256 {digest.hexdigest()})"


def _save_for_workers(model, side):
    """Saves an in-memory model into the output's side folder; returns the folder."""
    from emzoo import zoo

    folder = os.path.join(side, "model")
    try:
        zoo.save(model, folder, overwrite=True)
    except Exception as error:  # noqa: BLE001 - any failure means the workers cannot have it
        raise EmzooError(describe(f"The model cannot be saved for the Dask workers ({one_line(error)}).",
                                  "a model emzoo.save can write (a registered architecture), a "
                                  "registered name or a saved model folder",
                                  model=type(model).__name__)) from None
    return folder


def _flat(plan, prefix=""):
    flat = {}
    for key, value in plan.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _check_plan(started, plan, output):
    """Refuses to resume ``output`` unless its stored plan is this job's (one line on what differs)."""
    if not isinstance(started, dict):
        raise VolumeError(describe(f"{output} is not the output of an emzoo blockwise job; there is nothing "
                                   "to resume.", "an output a job with workers / scheduler started, or "
                                   "overwrite=True to replace it", output=os.fspath(output)))
    old, new = _flat(started), _flat(plan)
    for key in list(new) + [key for key in old if key not in new]:  # the plan's order: what matters first
        if old.get(key) != new.get(key):
            raise VolumeError(describe(
                f"{output} was started by a different job: its {key} was {old.get(key)!r}, this job's is "
                f"{new.get(key)!r}.", "the same input, factor or slices, model, tile, overlap, precision, "
                "voxel size and chunks as the job that started it, or overwrite=True to start "
                "again", output=os.fspath(output)))


def _reopen(output):
    """The existing ``output`` opened for writing in place; refuses one that is no emzoo output."""
    try:
        regions = open_regions(output)
    except (EmzooError, FileNotFoundError):
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure means it cannot be resumed
        raise VolumeError(describe(f"Cannot reopen {output} to resume it ({one_line(error)}).",
                                   "the output of the job to resume, or overwrite=True", output=output)) from None
    if regions.marker is None:
        raise VolumeError(describe(f"{output} is not the output of an emzoo job; there is nothing to resume.",
                                   "an output a job with workers / scheduler started, or "
                                   "overwrite=True to replace it", output=output))
    return regions


def _prepare(client, task):
    """Loads the model in every worker (once per process) before any output is written; returns
    what each worker reports (``pid``, ``precision``, ``threads``)."""
    addresses = sorted(client.nthreads())
    token = uuid.uuid4().hex[:8]
    futures = [client.submit(prepare_worker, task, workers=[address], allow_other_workers=False, pure=False,
                             key=f"emzoo-prepare-{token}-{index}") for index, address in enumerate(addresses)]
    try:
        return client.gather(futures)
    except EmzooError:
        raise
    except Exception as error:  # noqa: BLE001 - the worker's failure, as one line
        raise EmzooError(describe(f"A Dask worker could not load the model ({one_line(error)}); nothing was "
                                  "written.", "a model every worker can load (a registered name, or a folder "
                                  "on a file system the workers see)", model=task["model"])) from None


def _same_precision(prepared, precision):
    """The precision every worker resolved ``precision`` to (``"auto"`` is decided per machine);
    refuses workers that disagree, whose blocks would differ."""
    found = sorted({str(info["precision"]) for info in prepared or ()})
    if len(found) > 1:
        raise EmzooError(describe(f"The Dask workers resolve precision {precision!r} differently "
                                  f"({', '.join(found)}); their blocks would not match.",
                                  "an explicit precision (float32 or bf16)", precision=precision))
    return found[0] if found else precision


def _run(client, task, todo, label, progress, cancel, output):
    """Submits the blocks ``todo`` and waits for them, with a progress bar over blocks; a set
    ``cancel`` event stops the job after the next finished block."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {client.submit(run_block, task, block, key=f"emzoo-block-{token}-{block.id}",
                             retries=RETRIES, pure=False): block for block in todo}
    bar = job_progress(progress, len(todo), label, unit="blocks")
    try:
        for future in as_completed(list(futures), loop=client.loop):
            if future.status != "finished":
                raise _block_error(future, futures[future], output)
            bar.update()
            if cancel is not None and cancel.is_set():
                raise JobCancelled(output)
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        bar.close()


def _block_error(future, block, output):
    """A failed block as one :class:`~emzoo.errors.IncompleteOutputError` (the output stays
    incomplete, resumable)."""
    error = future.exception() if future.status == "error" else None
    where = (f"Block {block.id} (output slices {block.z0}:{block.z1}, y {block.y0}:{block.y1}, "
             f"x {block.x0}:{block.x1}) of {output} failed")
    if isinstance(error, EmzooError):
        return IncompleteOutputError(output, f"{where}: {one_line(error)}")
    cause = "it was cancelled" if error is None else f"{type(error).__name__}: {one_line(error)}"
    return IncompleteOutputError(output, f"{where} after {RETRIES} retries ({cause}).")
