"""Completion records of the blockwise engine: which blocks of an output are finished.

A block is recorded by an empty file ``OUTPUT/.emzoo/blocks/<id>``, created by the task that
computed it only after all its chunks were written (the writes have returned), so a record always
means a finished block; a task killed before that leaves no record and the block is redone by
``--resume``. The side folder ``OUTPUT/.emzoo`` (ignored by Zarr and N5 readers) also holds a model
passed in memory, saved for the workers to load; it is removed when the output is marked complete.

What "finished" survives: a killed process or client (the files are in the operating system's
cache once written); after a power loss it depends on the file system writing data in order
(journaled local file systems and the common cluster file systems order data before metadata).

Example:
    >>> records = BlockRecords("out.zarr")          # doctest: +SKIP
    >>> records.record(3); sorted(records.done())   # doctest: +SKIP
    [3]
"""

import os
import shutil

SIDE_FOLDER = ".emzoo"


class BlockRecords:
    """The completion records of the output store (or container) folder ``store``."""

    def __init__(self, store):
        self.side = os.path.join(os.fspath(store), SIDE_FOLDER)
        self.folder = os.path.join(self.side, "blocks")

    def done(self):
        """The ids of the recorded (finished) blocks, as a set of ints."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return set()
        return {int(name) for name in names if name.isdigit()}

    def record(self, block_id):
        """Records block ``block_id`` as finished (call after its chunks are written)."""
        os.makedirs(self.folder, exist_ok=True)
        with open(os.path.join(self.folder, str(int(block_id))), "wb"):
            pass

    def clear(self):
        """Removes the records and the side folder (the output is complete)."""
        shutil.rmtree(self.side, ignore_errors=True)
