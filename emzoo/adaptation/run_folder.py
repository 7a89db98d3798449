"""The run folder of an adaptation: its record, checkpoints, resume, and signals held per step.

With ``output``, the folder holds ``adaptation-run.json`` (what the run was started for: the base
weights' sha256, the input's sha256, factor, voxel size, budget and settings) and
``adaptation-checkpoint.h5`` (weights, optimizer state, step, time spent, the held-out scores and
the best weights so far), each rewritten atomically (written to a temporary name, then renamed).
A resume refuses a folder started for another model, volume, factor, budget or settings.

Example:
    >>> run_state("no/such/folder") is None
    True
"""

import hashlib
import json
import os
import pathlib

import numpy as np

from emzoo.data.volumes.base import split_container_path
from emzoo.errors import EmzooError, describe

RUN_FILE = "adaptation-run.json"
CHECKPOINT_FILE = "adaptation-checkpoint.h5"
# The record keys a resumed run must share with the run that started its folder, and their names.
IDENTITY = {"base_weights_sha256": "model", "input_sha256": "volume", "data_sha256": "volume",
             "factor": "factor", "voxel_size": "voxel size", "budget": "budget",
             "batch_size": "batch size", "crop": "crop", "learning_rate": "learning rate",
             "val_fraction": "validation fraction",
             "val_batches": "validation batches", "evaluate_every": "evaluation interval",
             "seed": "seed", "loss": "loss", "precision": "precision"}

# Record keys renamed since runs were first recorded: old name -> today's.
_RENAMED = {"validation_fraction": "val_fraction", "validation_batches": "val_batches"}


def file_digest(path):
    from emzoo import weights

    path = pathlib.Path(os.fspath(path))
    return weights.sha256_of(path) if path.is_file() else None


def array_digest(array):
    """sha256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def model_digest(model):
    """sha256 of a model's architecture, configuration and weights."""
    described = {"architecture": getattr(model, "architecture", type(model).__name__),
                 "config": model.get_config()}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    for weight in model.get_weights():
        digest.update(array_digest(np.asarray(weight)).encode())
    return digest.hexdigest()


def write_json(path, record):
    """Writes ``record`` to ``path`` atomically (:func:`emzoo.atomic.write_json`)."""
    from emzoo.atomic import write_json as write

    write(path, record)


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


class AnotherRunError(EmzooError):
    """A resume asked of a run folder that was started for another model, volume or settings."""


def check_same_run(folder, stored, current, keys):
    """Refuses (:class:`AnotherRunError`) to resume ``folder`` when ``current`` differs from
    ``stored`` on ``keys`` (a record written before ``val_fraction`` / ``val_batches`` took the
    names of ``emzoo train``'s settings is read with its old names)."""
    stored = {_RENAMED.get(key, key): value for key, value in stored.items()}
    changed = [key for key in keys if stored.get(key) != current.get(key)]
    if changed:
        names = ", ".join(dict.fromkeys(IDENTITY[key] for key in changed))
        raise AnotherRunError(describe(
            f"Cannot resume {folder}: it was started for another {names}.",
            f"the model, volume, factor, budget and settings it was started with (recorded in "
            f"{RUN_FILE}, or in the metadata of a finished folder), or a new -o folder",
            **{key: current.get(key) for key in changed}))


def folder_beside(output):
    """The run folder of the adaptation that ``emzoo upscale OUTPUT --adapt M`` makes: ``OUTPUT``'s
    file or folder (without a path inside a container) with ``.adapted`` appended, beside it.

    Example:
        >>> folder_beside("iso.ome.zarr:/0")
        PosixPath('iso.ome.zarr.adapted')
    """
    file, _ = split_container_path(os.fspath(output))
    return pathlib.Path(file.rstrip("/\\") + ".adapted")


def prepare_output(folder, record, resume, overwrite):
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
                "a new folder, resume=True to return a finished adaptation, or overwrite=True "
                "to replace it", output=str(folder)))
        if stored is None:
            raise EmzooError(describe(
                f"{folder} holds a model without a record of a resumable adaptation.",
                "a new `output` folder, or overwrite=True to replace it", output=str(folder)))
        mode = "complete"
    elif (folder / RUN_FILE).is_file():
        if not resume:
            state = _checkpoint_state(folder)
            raise EmzooError(describe(
                f"{folder} holds an interrupted adaptation (last checkpoint at step "
                f"{0 if state is None else state['step']}).",
                "resume=True to continue it, overwrite=True to start again, or a new `output` "
                "folder",
                output=str(folder)))
        stored = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        mode = "resume"
    else:
        return "fresh", None
    check_same_run(folder, stored, record,
                    [key for key in IDENTITY if key != "base_weights_sha256"])
    return mode, stored


def clear_run_folder(folder):
    """Removes what an earlier adaptation wrote in ``folder`` (``config.json`` first, so the folder
    stops being loadable before its weights go); other files are left alone."""
    for name in ("config.json", "model.weights.h5", RUN_FILE, CHECKPOINT_FILE):
        (folder / name).unlink(missing_ok=True)


def save_checkpoint(folder, model, state, best_weights):
    """Writes weights, optimizer state, ``state`` and the best weights, atomically."""
    import h5py

    from emzoo.atomic import atomic_path

    groups = {"weights": model.get_weights(),
              "optimizer": [np.asarray(variable) for variable in model.optimizer.variables],
              "best_weights": best_weights or []}
    with atomic_path(folder / CHECKPOINT_FILE, suffix=".h5") as tmp, h5py.File(tmp, "w") as file:
        file.attrs["state"] = json.dumps(dict(state, has_best=best_weights is not None))
        for name, arrays in groups.items():
            group = file.create_group(name)
            for index, array in enumerate(arrays):
                group.create_dataset(f"{index:05d}", data=np.asarray(array))


def load_checkpoint(folder, model):
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


class HeldSignals:
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


def finished_report(folder, record):
    """The report of an adaptation whose folder is complete (``resume`` of a finished run)."""
    from emzoo import zoo

    for name in (CHECKPOINT_FILE, RUN_FILE):   # left if it was killed while cleaning up
        (folder / name).unlink(missing_ok=True)
    scores = record["self_validation"]
    return {"model": zoo.load(str(folder), compile=False),
            "improved": record["replaced_base_weights"], "validation_before": scores["before"],
            "validation_after": scores["after"], "steps": record["steps_run"],
            "best_step": record["best_step"], "seconds": record["seconds"],
            "gaps": record["lateral_gaps"], "factor": record["factor"], "output": str(folder),
            "resumed": record["resumed_at_steps"], "already_complete": True,
            "skipped": record["skipped"], "diverged": record["diverged"],
            "vetoed": record["vetoed"], "assumed": record.get("assumed"),  # (older folders lack it)
            "axial_before": scores["axial_before"],
            "axial_after": scores["axial_after"]}
