"""TensorFlow's own start-up lines off the terminal, in the apps' process and in Dask workers.

TensorFlow's C++ start-up lines (the oneDNN notice, CPU features, the absl "All log messages
before absl::InitializeLog()" notice) are written while ``tensorflow`` is imported and ignore
``TF_CPP_MIN_LOG_LEVEL``. :func:`quiet_logs` therefore installs an importer that runs the first
``import tensorflow`` with stderr (file descriptor 2) captured, and replays what it captured if
the import fails. The apps call it before anything imports TensorFlow (``--verbose`` keeps the
lines); the local Dask cluster of the blockwise engine (:mod:`~emzoo.engine.cluster`) lists this
module as its workers' ``preload`` (:func:`worker_preloads`), so that each worker process calls it
(:func:`dask_setup`) before its first task imports TensorFlow.

This module imports the standard library only.

Example:
    >>> quiet_logs(verbose=False)  # doctest: +SKIP
    >>> import tensorflow          # doctest: +SKIP
"""

import logging
import os
import sys

_shown = False  # quiet_logs(verbose=True) was called: TensorFlow's logs are wanted, in workers too


def quiet_logs(verbose):
    """Hides TensorFlow's own logs unless ``verbose``; call before TensorFlow is imported.

    The C++ start-up lines are captured during the first ``import tensorflow`` and dropped
    (replayed if the import fails); later C++ logs are off (``TF_CPP_MIN_LOG_LEVEL=3`` unless
    set), and TensorFlow's Python logger (INFO lines while
    writing a SavedModel) shows errors only. Once TensorFlow is imported this changes nothing
    about its start-up lines.
    """
    global _shown
    _shown = bool(verbose)
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def worker_preloads():
    """The Dask worker ``preload`` list that quiets new worker processes: this module, whose
    :func:`dask_setup` each worker runs at start-up; empty after ``quiet_logs(verbose=True)``.

    Example:
        >>> worker_preloads()  # doctest: +SKIP
        ['emzoo.engine.quiet']
    """
    return [] if _shown else [__name__]


def dask_setup(worker):
    """Dask's preload hook: runs in each worker process as it starts, before any task."""
    del worker
    quiet_logs(verbose=False)


class _QuietTensorFlowImport:
    """A meta-path finder that runs the first ``import tensorflow`` with stderr captured.

    It finds the module with the other finders (so a missing TensorFlow is still missing) and
    wraps only that spec's ``exec_module``; it removes itself once used.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if find is not None:
                spec = find(name, path, target)
                if spec is not None:
                    break
        if hasattr(getattr(spec, "loader", None), "exec_module"):
            _capture_stderr_while_executing(spec.loader)
        return spec


def _capture_stderr_while_executing(loader):
    """Makes ``loader.exec_module`` (once) run with file descriptor 2 sent to a temporary file,
    which is replayed on stderr if the import fails."""
    import tempfile

    exec_module = loader.exec_module

    def run(module):
        del loader.exec_module  # back to the class's method
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                exec_module(module)
            except BaseException:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                os.write(2, captured.read())
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)

    loader.exec_module = run
