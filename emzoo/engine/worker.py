"""What runs inside a Dask worker process for the blockwise engine.

The client (:mod:`~emzoo.engine.distributed`) submits two kinds of tasks, each with the job's
``task`` dict: ``plan`` (the job plan's JSON, :meth:`~emzoo.engine.plan.JobPlan.to_json`, with
its precision resolved), ``model`` (the model's name or folder), ``job`` (an id of this run) and
``threads`` (the TensorFlow threads of a local cluster's worker, or ``None``):

- :func:`prepare_worker`, once on every worker before anything is written: loads the model and
  builds the engine, so that a model the workers cannot load fails the job early;
- :func:`run_block`, once per block: computes it (:func:`~emzoo.engine.blocks.compute_block`),
  writes its own chunks of the output, and only then its completion record
  (:mod:`~emzoo.engine.records`).

Each worker process loads a model once (cached by its name or folder), after setting TensorFlow's
threads to the task's (:func:`~emzoo.engine.policy.configure_threads`; ``None``: as the cluster set
them), builds one midpoint engine per thread (cached by the model, the plan's engine options and
slice size), and opens the current job's input and output once. This module never imports the
client's (:mod:`~emzoo.engine.distributed`).
"""

import os
import threading

from emzoo.data.volumes import open_regions
from emzoo.engine.blocks import compute_block
from emzoo.engine.memory import release_freed_memory
from emzoo.engine.plan import JobPlan
from emzoo.engine.records import BlockRecords

_WORKER = {}  # this worker process's models, engines and the current job's volumes
_WORKER_LOCK = threading.Lock()


def prepare_worker(task):
    """Runs on each worker before the blocks: loads the model and builds the engine; returns what
    the client checks (``pid``, the resolved ``precision``, ``threads``)."""
    plan = JobPlan.from_json(task["plan"])
    engine = _engine(task, plan)
    return {"pid": os.getpid(), "precision": getattr(engine, "precision", plan.options.precision),
            "threads": _WORKER.get("threads")}


def run_block(task, block):
    """One task: computes ``block``, writes its chunks, then records it as finished; returns the
    block's id."""
    state = _job_state(task)
    plan = state["plan"]
    engine = _engine(task, plan)
    raw = compute_block(block, state["recipe"], engine.tiler, engine, state["source"],
                        plan.options.residual_scales if plan.job == "upscale" else None)
    state["regions"].write(block.z0, block.y0, block.x0, raw)
    BlockRecords(state["store"]).record(block.id)  # only now: every chunk of the block is written
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
            from emzoo.engine.interpolators import resolve_model

            _WORKER[key] = resolve_model(task["model"])
        return _WORKER[key]


def _engine(task, plan):
    """A midpoint engine for the plan's slices and options (one per thread; engines hold state)."""
    model = _model(task)
    height, width = plan.input_shape[1:]
    options = plan.options
    key = ("engine", task["model"], height, width, options, plan.expected_pairs,
           threading.get_ident())
    with _WORKER_LOCK:
        if key not in _WORKER:
            from emzoo.engine.interpolators import midpoint_engine

            _WORKER[key] = midpoint_engine(model, height, width, options.tile, options.overlap,
                                           batch_size=options.batch_size,
                                           reuse_features=options.reuse_features,
                                           jit_compile=options.xla,
                                           expected_pairs=plan.expected_pairs,
                                           precision=options.precision)
        return _WORKER[key]


def _job_state(task):
    """The current job's plan, input volume, output regions and recipe, opened once per process."""
    with _WORKER_LOCK:
        state = _WORKER.get("job")
        if state is None or state["id"] != (task["job"], task["plan"]):
            from emzoo.data.volumes import split_container_path

            plan = JobPlan.from_json(task["plan"])  # its output path made absolute by the client
            state = {"id": (task["job"], task["plan"]), "plan": plan, "source": plan.open_input(),
                     "regions": open_regions(plan.output),
                     "store": split_container_path(plan.output)[0], "recipe": plan.recipe}
            _WORKER["job"] = state
        return state
