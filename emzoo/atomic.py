"""Files written whole or not at all: a temporary name in the same folder, renamed when complete.

Every file emzoo writes by itself (model folders, weights, run records, checkpoints, figures,
reports) goes through :func:`atomic_path`, so a crash, Ctrl-C or full disk never leaves a
half-written file under the real name, and an existing file is replaced in one step
(``os.replace`` within one folder). Volumes have their own writers
(:mod:`emzoo.data.volumes`), which follow the same rule chunk by chunk.

Example:
    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "report.json")
    >>> write_json(path, {"psnr": 30.1})
    >>> json.load(open(path))
    {'psnr': 30.1}
"""

import contextlib
import json
import os
import uuid


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a new temporary path beside ``path`` (ending in ``suffix``, for writers that choose
    their format by the name, e.g. ``".weights.h5"``); when the block ends without an error it is
    renamed to ``path``, otherwise removed.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
        >>> with atomic_path(path) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(path).read()
        'done'
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    # A fresh name, not a file made here: the writer creates it with the usual permissions.
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)


def write_json(path, record, indent=2, **dumps):
    """Writes ``record`` as JSON (and a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(record, indent=indent, **dumps) + "\n")
