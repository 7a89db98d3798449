"""What runs inside a Dask worker process for the blockwise engine.

The client (:mod:`~emzoo.engine.distributed`) submits two kinds of tasks, each with the job's
``task`` dict (JSON-like values: the input and output paths, the model's name or folder, the
output shape, tile, overlap and engine settings, the recipe as ``["upscale", slices, factor]`` or
``["repair", slices, runs]``, and the TensorFlow threads of a local cluster's worker, or ``None``):

- :func:`prepare_worker`, once on every worker before anything is written: loads the model and
  builds the engine, so that a model the workers cannot load fails the job early;
- :func:`run_block`, once per block: computes it (:func:`~emzoo.engine.blocks.compute_block`),
  writes its own chunks of the output, and only then its completion record
  (:mod:`~emzoo.engine.records`).

Each worker process loads a model once (cached by its name or folder), after setting TensorFlow's
threads to the task's (:func:`~emzoo.engine.policy.configure_threads`; ``None``: as the cluster set
them), builds one midpoint engine per thread, and opens the current job's input and output once.
``EMZOO_BLOCK_LOG=FILE`` (:data:`BLOCK_LOG`) makes every worker append the id of each block it
computes to FILE. This module never imports the client's (:mod:`~emzoo.engine.distributed`).
"""

import fractions
import os
import threading

from emzoo.data.volumes import open_regions, open_volume
from emzoo.engine.blocks import RepairRecipe, UpscaleRecipe, compute_block
from emzoo.engine.memory import release_freed_memory
from emzoo.engine.records import BlockRecords

BLOCK_LOG = "EMZOO_BLOCK_LOG"  # the environment variable naming a file that logs computed blocks

_WORKER = {}  # this worker process's models, engines and the current job's volumes
_WORKER_LOCK = threading.Lock()


def prepare_worker(task):
    """Runs on each worker before the blocks: loads the model and builds the engine; returns what
    the client checks (``pid``, the resolved ``precision``, ``threads``)."""
    engine = _engine(task)
    return {"pid": os.getpid(), "precision": getattr(engine, "precision", task["precision"]),
            "threads": _WORKER.get("threads")}


def run_block(task, block):
    """One task: computes ``block``, writes its chunks, then records it as finished."""
    engine = _engine(task)
    state = _job_state(task)
    raw = compute_block(block, state["recipe"], engine.tiler, engine, state["source"])
    state["regions"].write(block.z0, block.y0, block.x0, raw)
    BlockRecords(task["store"]).record(block.id)  # only now: every chunk of the block is written
    log = os.environ.get(BLOCK_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{block.id}\n")
    del raw
    release_freed_memory()
    return block.id


def _model(task):
    """The task's model, loaded once per process, after TensorFlow's threads are set."""
    with _WORKER_LOCK:
        key = ("model", task["model"])
        if key not in _WORKER:
            if task["threads"] is not None and "threads" not in _WORKER:
                from emzoo.engine.policy import configure_threads

                _WORKER["threads"] = configure_threads(intra=task["threads"], inter=1)
            from emzoo.engine.midpoint import resolve_model

            _WORKER[key] = resolve_model(task["model"])
        return _WORKER[key]


def _engine(task):
    """A midpoint engine for the task's slices and settings (one per thread; engines hold state)."""
    model = _model(task)
    height, width = task["shape"][1:]
    settings = (task["tile"], task["overlap"], task["batch_size"], task["reuse_features"], task["jit_compile"])
    key = ("engine", task["model"], height, width, *settings, task["precision"], threading.get_ident())
    with _WORKER_LOCK:
        if key not in _WORKER:
            from emzoo.engine.midpoint import MidpointEngine

            _WORKER[key] = MidpointEngine(model, height, width, *settings,
                                          expected_pairs=task["expected_pairs"], precision=task["precision"])
        return _WORKER[key]


def _job_state(task):
    """The current job's input volume, output regions and recipe, opened once per process."""
    with _WORKER_LOCK:
        state = _WORKER.get("job")
        if state is None or state["id"] != task["job"]:
            source = open_volume(task["input"], allow_incomplete=task["allow_incomplete"])
            if task["value_range"] is not None:
                source.set_value_range(*task["value_range"])  # the client's: no worker reads it all
            kind, num_slices, value = task["recipe"]
            recipe = (UpscaleRecipe(num_slices, fractions.Fraction(value)) if kind == "upscale"
                      else RepairRecipe(num_slices, [tuple(run) for run in value]))
            state = {"id": task["job"], "source": source, "regions": open_regions(task["output"]),
                     "recipe": recipe}
            _WORKER["job"] = state
        return state
