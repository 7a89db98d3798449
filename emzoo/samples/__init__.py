"""Bundled sample data: a small crop of a CC BY FIB-SEM stack, so the first command needs no download.

``fibsem_sample.tif`` holds 17 slices x 256 x 256 pixels (uint8, ImageJ metadata, 10 nm isotropic
voxels) cut from the FlyEM Drosophila medulla FIB-SEM stack; see ``README.md`` in this folder for
the exact crop and the attribution the licence asks for.

The command-line apps accept the word ``sample`` as INPUT for this file (unless a file or folder
named ``sample`` exists in the current directory, which then wins).

Example:
    >>> import emzoo.samples
    >>> emzoo.samples.sample_path().endswith("fibsem_sample.tif")
    True
    >>> emzoo.samples.resolve_input("sample") == emzoo.samples.sample_path()   # doctest: +SKIP
    True
"""

import os

SAMPLE_NAME = "sample"
_SAMPLE_FILE = "fibsem_sample.tif"


def sample_path():
    """Absolute path of the bundled FIB-SEM sample stack (``fibsem_sample.tif``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), _SAMPLE_FILE)


def resolve_input(path):
    """``path`` itself, or the bundled sample when ``path`` is the word ``sample`` and no such file exists.

    Example:
        >>> resolve_input("stack.tif")
        'stack.tif'
    """
    if str(path) == SAMPLE_NAME and not os.path.exists(path):
        return sample_path()
    return path
