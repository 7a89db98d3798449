"""The Dask cluster of the blockwise engine: a new local one, or an existing one, and its client.

:func:`open_client` starts a ``distributed.LocalCluster`` of N worker processes on 127.0.0.1 (one
Dask thread each; ``workers=N``, ``--workers N``), or connects to an existing scheduler
(``scheduler="tcp://host:8786"``, ``--scheduler``, waiting up to :data:`SCHEDULER_TIMEOUT` seconds
for it and its first worker), and closes what it opened at the end, also on errors and Ctrl-C.
Dask's own INFO and WARNING lines stay off the terminal while it is open.

On a local cluster TensorFlow runs with ``cores // workers`` threads per worker (at least 1,
:func:`local_threads`), set through the workers' environment (``OMP_NUM_THREADS``,
``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS=1``; the workers also call
:func:`~emzoo.engine.policy.configure_threads`, see :mod:`~emzoo.engine.worker`), so N workers on
N cores do not oversubscribe them; and each worker process hides TensorFlow's start-up lines
(:mod:`~emzoo.engine.quiet`, as a Dask ``preload``). An existing cluster's workers are the
user's: threads and logs are theirs to set (start them with ``--nthreads 1`` and those variables).

The blockwise job itself is :mod:`~emzoo.engine.distributed`. Dask is imported when a client is
opened (``pip install 'emzoo[dask]'``).

Example:
    >>> with open_client(2, None, local_threads(2)) as client:   # doctest: +SKIP
    ...     len(client.nthreads())
    2
"""

import contextlib
import logging
import os

from emzoo.data.volumes.chunked import require
from emzoo.engine.quiet import worker_preloads
from emzoo.errors import EmzooError, describe, one_line

SCHEDULER_TIMEOUT = 10  # seconds to wait for a scheduler (and its first worker) to answer


def local_threads(workers):
    """TensorFlow threads per worker on a local cluster: this machine's cores // ``workers``, >= 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


@contextlib.contextmanager
def open_client(workers, scheduler, threads):
    """A Dask client: of a new local cluster of ``workers`` processes with TensorFlow at
    ``threads`` threads each (``scheduler=None``), or of the cluster at ``scheduler``; both closed
    on leaving. A cluster that cannot start or be reached is one :class:`EmzooError` line."""
    distributed = require("distributed", "dask", "Running on Dask (workers / scheduler)")
    with _quiet_dask_logs():
        if scheduler is not None:
            with _remote_client(distributed, scheduler) as client:
                yield client
        else:
            with _local_client(distributed, workers, threads) as client:
                yield client


@contextlib.contextmanager
def _quiet_dask_logs():
    """Dask's own INFO / WARNING lines (cluster start-up, a worker restarted after it died) off the
    terminal while a job runs; its ``silence_logs`` quiets only Dask's own handlers, not a root
    handler such as absl's."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _local_client(distributed, workers, threads):
    """A new cluster of ``workers`` processes on 127.0.0.1, TensorFlow at ``threads`` threads each."""
    import dask.config

    env = {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
           "TF_NUM_INTEROP_THREADS": "1"}
    # The user's configured preloads, if any, then the one that hides TensorFlow's start-up lines.
    preload = list(dask.config.get("distributed.worker.preload", None) or []) + worker_preloads()
    cluster = client = None
    try:
        try:
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None, env=env,
                                               preload=preload, silence_logs=logging.ERROR)
            client = distributed.Client(cluster, set_as_default=False)
        except Exception as error:  # noqa: BLE001 - any start-up failure is one line
            raise EmzooError(describe(
                f"Could not start a local Dask cluster of {workers} workers ({one_line(error)}).",
                "a machine where Dask can start worker processes on 127.0.0.1 (from a Python script, "
                "call this under `if __name__ == '__main__':`, since each worker process starts by "
                "importing the script)", workers=workers)) from None
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def _remote_client(distributed, scheduler):
    try:
        client = distributed.Client(scheduler, timeout=SCHEDULER_TIMEOUT, set_as_default=False)
    except Exception as error:  # noqa: BLE001 - refused, timed out, malformed: the same for the user
        raise EmzooError(describe(f"The Dask scheduler at {scheduler} does not answer ({one_line(error)}); "
                                  "nothing was written.", "the address of a running scheduler, e.g. "
                                  "tcp://10.0.0.5:8786", scheduler=scheduler)) from None
    try:
        try:
            client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT)
        except Exception:  # noqa: BLE001 - a timeout, whatever its class
            raise EmzooError(describe(f"The Dask scheduler at {scheduler} has no workers; nothing was written.",
                                      "a cluster with at least one worker", scheduler=scheduler)) from None
        yield client
    finally:
        client.close()
