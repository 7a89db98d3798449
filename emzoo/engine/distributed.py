"""The blockwise engine on Dask: upscale and repair chunked volumes with many worker processes,
resumable after any crash, and never silently incomplete. This module is the job as the client
runs it; :mod:`~emzoo.engine.cluster` starts or connects to the cluster, and
:mod:`~emzoo.engine.worker` is what runs in each worker process.

``upscale_volume(..., workers=N)`` / ``repair_volume(..., workers=N)`` (``--workers N``) run on a
new local cluster of N worker processes, closed at the end, also on errors and Ctrl-C;
``scheduler="tcp://host:8786"`` (``--scheduler``) runs on an existing cluster instead. A job:

1. checks everything before writing anything: the output is Zarr, OME-Zarr or N5 (written in place,
   whole chunks at a time: :func:`~emzoo.data.volumes.open_regions`), the input is a path (the
   workers open it themselves), the scheduler answers, and every worker loads the model;
2. creates the output empty, marked ``{"complete": false, "plan": ...}`` in its metadata
   (:meth:`~emzoo.data.volumes.zarr_chunked.ChunkedVolumeWriter.publish_incomplete`);
3. submits one task per block of the :class:`~emzoo.engine.blocks.BlockPlan` (retried up to
   :data:`RETRIES` times on errors; redone when its worker dies), each computing its block,
   writing its own chunks and then its completion record (:func:`~emzoo.engine.worker.run_block`);
   a progress bar counts blocks, with an ETA;
4. marks the output complete once every block is recorded.

``resume=True`` (``--resume``) reopens the output a killed job left behind, checks that this job's
plan (input path, shape and dtype; factor or slices; model; tile and overlap; precision; output
shape, dtype, voxel size, chunks and blocks) is the one it was started with (one line naming what
differs), and submits only the blocks without a record; on a complete output it does nothing.
Results equal the single-process engine's with the same tile and overlap (see
:mod:`~emzoo.engine.blocks` for the halo). Without a tile, slices up to :data:`WHOLE_SLICE_MAX`
pixels wide are processed whole, as the single-process engine does (blocks are then whole-slice
z-slabs and both engines give the same output); larger slices are tiled with :data:`DEFAULT_TILE`,
so that a worker's memory stays bounded by its block.

A model given in memory (a Keras model, e.g. after ``--adapt``) is saved into the output's side
folder for the workers to load; the sha256 of its weights stands for it in the plan. Every worker
must resolve the precision alike (``"auto"`` is decided per machine), or the job is refused.

Dask is imported when a job runs (``pip install 'emzoo[dask]'``).

Example:
    >>> emzoo.upscale_volume("in.zarr", "default", factor=4, output="out.zarr", workers=2)  # doctest: +SKIP
    >>> emzoo.upscale_volume("in.zarr", "default", factor=4, output="out.zarr", workers=2,
    ...                      resume=True)["skipped"]                                       # doctest: +SKIP
    96
"""

import hashlib
import json
import os
import shutil
import time
import uuid

import numpy as np

from emzoo.data.volumes import CHUNKED_FORMATS, create_volume, format_of, open_regions, split_hdf5_path
from emzoo.data.volumes.zarr_chunked import default_chunks
from emzoo.engine.blocks import BlockPlan, RepairRecipe, UpscaleRecipe
from emzoo.engine.cluster import local_threads, open_client
from emzoo.engine.job import summary_line
from emzoo.engine.progress import Progress
from emzoo.engine.records import BlockRecords
from emzoo.engine.tiler import Tiler
from emzoo.engine.worker import prepare_worker, run_block
from emzoo.errors import EmzooError, VolumeError, check_integer, describe, one_line

DEFAULT_TILE = 512  # the blockwise path's tile when none is given and slices are large
WHOLE_SLICE_MAX = 2048  # without a tile, slices up to this height and width are processed whole
RETRIES = 3  # attempts after a task's first failure
_CHUNKED_TEXT = "an output ending in .zarr, .ome.zarr or .n5 (optionally :/path/inside)"


def wants_blockwise(workers=None, scheduler=None, resume=False):
    """Whether a job's arguments ask for the blockwise engine (``workers``, ``scheduler`` or
    ``resume``) rather than the single-process one.

    Example:
        >>> wants_blockwise(), wants_blockwise(workers=2)
        (False, True)
    """
    return workers is not None or scheduler is not None or bool(resume)


def check_request(volume, output, workers=None, scheduler=None, resume=False, overwrite=False):
    """Refuses, before any work, what the blockwise engine cannot do (one :class:`EmzooError`).

    The output must be a Zarr, OME-Zarr or N5 address; the input a path the workers can open;
    ``workers`` a positive integer, or ``scheduler`` an address (not both); ``resume`` needs one
    of them, and excludes ``overwrite`` (``volume=None``: not checked, for apps that check their flags before reading the
    input). Returns the number of local workers (``None`` with a scheduler).

    Example:
        >>> check_request("in.tif", "out.tif", workers=2)
        Traceback (most recent call last):
        ...
        emzoo.errors.VolumeError: The blockwise engine (workers / scheduler) writes Zarr, OME-Zarr or N5 outputs only, in place, chunk by chunk. Expected an output ending in .zarr, .ome.zarr or .n5 (optionally :/path/inside). Received: output='out.tif'
    """
    if workers is not None and scheduler is not None:
        raise EmzooError(describe("`workers` and `scheduler` exclude each other.",
                                  "workers=N for a local cluster, or scheduler=ADDRESS for an existing one",
                                  workers=workers, scheduler=scheduler))
    if workers is None and scheduler is None:
        raise EmzooError(describe("`resume` continues a blockwise job, which runs on Dask.",
                                  "workers=N (--workers N) or scheduler=ADDRESS (--scheduler ADDRESS) "
                                  "with resume", resume=resume))
    if resume and overwrite:
        raise EmzooError(describe("`resume` and `overwrite` exclude each other.",
                                  "resume to continue the output, or overwrite to start it again",
                                  resume=resume, overwrite=overwrite))
    if workers is not None:
        workers = check_integer("workers", workers)
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise EmzooError(describe("Invalid value for argument `scheduler`.",
                                  "a scheduler address, e.g. tcp://10.0.0.5:8786", scheduler=scheduler))
    if output is None or format_of(os.fspath(output)) not in CHUNKED_FORMATS:
        raise VolumeError(describe("The blockwise engine (workers / scheduler) writes Zarr, OME-Zarr or N5 "
                                   "outputs only, in place, chunk by chunk.", _CHUNKED_TEXT,
                                   output=None if output is None else os.fspath(output)))
    if volume is not None and not isinstance(volume, (str, os.PathLike)):
        raise EmzooError(describe("The blockwise engine reads its input from a path (each worker opens "
                                  "it), not from memory.", "a volume path (TIFF, HDF5, Zarr, OME-Zarr, N5, "
                                  "a folder); write an array with emzoo.data.volumes.write_volume first",
                                  volume=type(volume).__name__))
    return workers


def run_blockwise(job, recipe, shape, voxel_size, model, *, label, kind, extra=None, tile=None,
                  overlap=32, batch_size=None, reuse_features=None, jit_compile="auto",
                  precision="float32", workers=None, scheduler=None, resume=False, overwrite=False,
                  chunks=None, block_size=None, allow_incomplete=False, expected_pairs=None,
                  progress=True):
    """Runs a checked volume job blockwise on Dask; returns the result dict of the volume jobs.

    ``upscale_volume`` and ``repair_volume`` call this after their own checks (``job``: the
    :class:`~emzoo.engine.job.Job` opened with its output, ``recipe``: where each output slice
    comes from, ``shape`` and ``voxel_size``: the output's). See the module's docstring.

    Args:
        model: a registered name, a saved model folder, ``"flow"``, or a Keras model (saved for
            the workers into the output's side folder).
        label, kind: the progress bar's label and the summary's description of the job.
        extra: more entries of the result (``factor``, ``repaired``).
        tile, overlap: the global tile grid (``tile=None``: whole slices up to
            :data:`WHOLE_SLICE_MAX` pixels, else :data:`DEFAULT_TILE`).
        batch_size, reuse_features, jit_compile, precision: the workers' engine settings.
        workers, scheduler: N local worker processes, or an existing scheduler's address.
        resume: continue the job that left ``job.output`` incomplete.
        chunks: the output's chunk shape (z, y, x); default
            :func:`~emzoo.data.volumes.zarr_chunked.default_chunks` (or the existing output's).
        block_size: (y, x) pixels of a block's region, rounded up to whole chunks (default
            :data:`~emzoo.engine.blocks.DEFAULT_REGION`; on resume, the started job's).
        allow_incomplete: the workers may read an input that is an unfinished emzoo output.
        expected_pairs: the pairs the job interpolates (for the XLA policy).

    Returns:
        The dict the single-process jobs return (``output``, ``array`` = ``None``, shapes,
        ``dtype``, ``voxel_size``, ``precision``, ``seconds``, ``summary``, and ``extra``), plus
        ``blocks`` (their number), ``computed``, ``skipped`` (recorded by an earlier run),
        ``workers``, ``threads`` (TensorFlow threads per worker, ``None`` when the cluster sets
        them) and ``already_complete``.

    Example:
        >>> run_blockwise(job, UpscaleRecipe(9, 2), (17, 64, 96), None, "default", label="upscale",
        ...               kind="upscale x2", workers=2)["computed"]               # doctest: +SKIP
        30
    """
    start = time.perf_counter()
    extra = dict(extra or {})
    workers = check_request(job.source.path, job.output, workers, scheduler, resume, overwrite)
    tile, overlap = _tiles(shape, tile, overlap)
    spec, in_memory, model_id = _model_spec(model, tile)
    output = _absolute(job.output)
    store = split_hdf5_path(output)[0]
    records = BlockRecords(store)
    regions = _reopen(output) if resume and os.path.exists(store) else None
    started = (regions.marker.get("plan") or {}) if regions is not None else {}
    if regions is not None:  # what the started job chose, unless given again (then checked)
        stored = started.get("blocks", {}).get("block_shape")
        if block_size is None and isinstance(stored, list) and len(stored) == 3:
            block_size = tuple(stored[1:])
        chunks = regions.chunks if chunks is None else chunks
    blocks = BlockPlan(shape, default_chunks(shape, job.dtype, chunks, output, buffered=False),
                       Tiler(shape[1], shape[2], tile, overlap), block_size)
    plan = _plan(job, recipe, model_id, tile, overlap, precision, shape, voxel_size, blocks, label)
    done = set()
    if regions is not None:
        _check_plan(started or None, plan, job.output)
        if regions.marker.get("complete") is True:
            return _result(job, shape, voxel_size, extra, precision, start, blocks, 0, len(blocks),
                           None, None, f"{kind}: {job.output} is already complete; nothing to do",
                           already_complete=True)
        done = records.done() & set(range(len(blocks)))
    task = {"job": uuid.uuid4().hex, "input": _absolute(job.source.path), "allow_incomplete": allow_incomplete,
            "value_range": _value_range(job.source), "output": output, "store": store, "model": spec,
            "shape": list(job.shape), "tile": tile, "overlap": overlap, "batch_size": batch_size,
            "reuse_features": reuse_features, "jit_compile": jit_compile, "precision": precision,
            "expected_pairs": expected_pairs, "recipe": _recipe_spec(recipe, job.shape[0]),
            "threads": None if workers is None else local_threads(workers)}
    with open_client(workers, scheduler, task["threads"]) as client:
        prepared = _prepare(client, task) if spec is not None else None  # before writing anything
        created = regions is None
        if created:
            writer = create_volume(job.output, shape, job.dtype, voxel_size, overwrite=overwrite,
                                   chunks=blocks.chunks)
            writer.publish_incomplete({"plan": plan})
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
            task["precision"] = _same_precision(prepared, precision)
            todo = [block for block in blocks if block.id not in done]
            _run(client, task, todo, label, progress, job.output)
        except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM: the apps say what is left behind
            stop.kept_incomplete = job.output
            raise
        missing = set(range(len(blocks))) - records.done()
        if missing:
            raise VolumeError(describe(f"{len(missing)} block(s) of {job.output} finished without their "
                                       "completion records; the output stays incomplete.",
                                       "a file system that keeps the files written (run again with --resume)",
                                       first_missing=min(missing)))
        regions.set_marker({"complete": True, "plan": plan})
        records.clear()
        count = workers if workers is not None else len(client.nthreads())
    resolved = task["precision"]
    threads = task["threads"]
    where = (f"{count} worker(s), {threads} TensorFlow thread(s) each" if threads is not None
             else f"{count} worker(s) of {scheduler}, threads as the cluster sets them")
    text = (f"{kind} on Dask ({where}; {len(blocks)} blocks: {len(todo)} computed, {len(done)} skipped "
            "as finished before)")
    return _result(job, shape, voxel_size, extra, resolved, start, blocks, len(todo), len(done), count,
                   threads, text, already_complete=False)


def _tiles(shape, tile, overlap):
    """The job's (tile, overlap), checked; no tile means whole slices up to :data:`WHOLE_SLICE_MAX`."""
    if tile is None:
        tile = None if max(shape[1:]) <= WHOLE_SLICE_MAX else DEFAULT_TILE
    else:
        tile = check_integer("tile", tile)
    overlap = check_integer("overlap", overlap, minimum=0)
    if tile is not None and overlap >= tile:
        raise EmzooError(describe("Invalid value for argument `overlap`.", f"fewer pixels than the tile ({tile})",
                                  overlap=overlap))
    return tile, overlap


def _absolute(address):
    """``address`` with its file or folder part made absolute (workers may run elsewhere)."""
    file, inner = split_hdf5_path(os.fspath(address))
    return os.path.abspath(os.path.expanduser(file)) + (f":{inner}" if inner else "")


def _model_spec(model, tile):
    """``(spec the workers load, in-memory Keras model or None, the plan's name for it)``, checked."""
    if isinstance(model, (str, os.PathLike)):
        spec = os.fspath(model)
        if spec == "flow":
            return spec, None, spec
        from emzoo import zoo

        zoo.check_trained(spec)  # unknown names and missing weights: one line, before any work
        multiple = zoo.describe_model(spec).get("metadata", {}).get("size_multiple")
        if multiple and tile is not None and tile < int(multiple):
            raise EmzooError(describe("Invalid value for argument `tile`: smaller than the model's size "
                                      "multiple.", f"a tile of at least {multiple} pixels", tile=tile))
        folder = os.path.expanduser(spec)
        spec = os.path.abspath(folder) if os.path.isdir(folder) else spec
        return spec, None, spec
    import keras

    if not isinstance(model, keras.Model):
        raise EmzooError(describe("The blockwise engine runs models its workers can load.",
                                  "a registered name, a saved model folder, 'flow', or a Keras model",
                                  model=type(model).__name__))
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


def _value_range(source):
    """A float input's (min, max), computed once here so that no worker reads the whole volume."""
    if np.dtype(source.dtype).kind != "f" or not callable(getattr(source, "value_range", None)):
        return None
    return [float(v) for v in source.value_range()]


def _recipe_spec(recipe, num_slices):
    if isinstance(recipe, UpscaleRecipe):
        return ["upscale", num_slices, str(recipe.factor)]
    if isinstance(recipe, RepairRecipe):
        return ["repair", num_slices, [list(run) for run in recipe.runs]]
    raise EmzooError(describe("Unknown recipe.", "an UpscaleRecipe or a RepairRecipe",
                              recipe=type(recipe).__name__))


def _plan(job, recipe, model_id, tile, overlap, precision, shape, voxel_size, blocks, label):
    """What a resumed job must share with the job that started the output (JSON values)."""
    plan = {"job": label,
            "input": {"path": _absolute(job.source.path), "shape": list(job.shape), "dtype": job.dtype.name},
            **recipe.describe(), "model": model_id, "tile": tile, "overlap": overlap,
            "precision": str(precision),
            "output": {"shape": list(shape), "dtype": job.dtype.name,
                       "voxel_size": None if voxel_size is None else [float(v) for v in voxel_size]},
            "blocks": blocks.describe()}
    return json.loads(json.dumps(plan))


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
                                   "--overwrite (overwrite=True) to replace it", output=os.fspath(output)))
    old, new = _flat(started), _flat(plan)
    for key in list(new) + [key for key in old if key not in new]:  # the plan's order: what matters first
        if old.get(key) != new.get(key):
            raise VolumeError(describe(
                f"{output} was started by a different job: its {key} was {old.get(key)!r}, this job's is "
                f"{new.get(key)!r}.", "the same input, factor or slices, model, tile, overlap, precision, "
                "voxel size and chunks as the job that started it, or --overwrite (overwrite=True) to "
                "start again", output=os.fspath(output)))


def _reopen(output):
    """The existing ``output`` opened for writing in place; refuses one that is no emzoo output."""
    try:
        regions = open_regions(output)
    except (EmzooError, FileNotFoundError):
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure means it cannot be resumed
        raise VolumeError(describe(f"Cannot reopen {output} to resume it ({one_line(error)}).",
                                   "the output of the job to resume, or --overwrite", output=output)) from None
    if regions.marker is None:
        raise VolumeError(describe(f"{output} is not the output of an emzoo job; there is nothing to resume.",
                                   "an output a job with workers / scheduler started, or --overwrite "
                                   "(overwrite=True) to replace it", output=output))
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
                                  "an explicit precision (--precision float32 or bf16)", precision=precision))
    return found[0] if found else precision


def _run(client, task, todo, label, progress, output):
    """Submits the blocks ``todo`` and waits for them, with a progress bar over blocks."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {client.submit(run_block, task, block, key=f"emzoo-block-{token}-{block.id}",
                             retries=RETRIES, pure=False): block for block in todo}
    bar = Progress(len(todo), label, enabled=progress, unit="blocks")
    try:
        for future in as_completed(list(futures), loop=client.loop):
            if future.status != "finished":
                raise _block_error(future, futures[future], output)
            bar.update()
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        bar.close()


def _block_error(future, block, output):
    """A failed block as one :class:`EmzooError` line (the output stays incomplete, resumable)."""
    error = future.exception() if future.status == "error" else None
    where = (f"Block {block.id} (output slices {block.z0}:{block.z1}, y {block.y0}:{block.y1}, "
             f"x {block.x0}:{block.x1}) of {output} failed")
    if isinstance(error, EmzooError):
        return type(error)(f"{where}: {error} (the output is kept incomplete; continue it with --resume)")
    cause = "it was cancelled" if error is None else f"{type(error).__name__}: {one_line(error)}"
    return EmzooError(describe(f"{where} after {RETRIES} retries ({cause}); the output is kept incomplete.",
                               "a job that runs to the end: fix the cause and continue it with --resume",
                               output=os.fspath(output)))


def _result(job, shape, voxel_size, extra, precision, start, blocks, computed, skipped, workers, threads,
            kind, already_complete):
    seconds = time.perf_counter() - start
    line = kind if already_complete else summary_line(kind, job.shape, shape, job.dtype, job.voxel_size,
                                                      voxel_size, seconds, job.output)
    return {"output": job.output, "array": None, "input_shape": job.shape, "output_shape": tuple(shape),
            "dtype": job.dtype.name, "voxel_size": voxel_size, **extra, "precision": precision,
            "seconds": seconds, "summary": line, "blocks": len(blocks), "computed": computed,
            "skipped": skipped, "workers": workers, "threads": threads, "already_complete": already_complete}
