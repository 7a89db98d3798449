"""Data: volume I/O (:mod:`emzoo.data.volumes`, NumPy only) and tf.data triplet pipelines (TensorFlow).

``from emzoo.data import open_volume`` never imports TensorFlow; ``emzoo.data.triplet_dataset``
and the TFRecord helpers import it the first time they are used.

Example:
    >>> from emzoo.data import open_volume, triplet_dataset     # doctest: +SKIP
    >>> ds = triplet_dataset(["stack.tif"], gaps=(1, 2, 4), crop=256, batch_size=8)  # doctest: +SKIP
"""

from emzoo.data.volumes import (ArrayVolume, Volume, VolumeWriter, create_volume, denormalise,  # noqa: F401
                                normalise, open_volume, read_volume, write_volume)

_LAZY = {
    "triplet_dataset": "emzoo.data.triplets",
    "validation_triplets": "emzoo.data.triplets",
    "film_tfrecord_dataset": "emzoo.data.tfrecord",
    "write_film_tfrecord": "emzoo.data.tfrecord",
    "prepare_triplets": "emzoo.data.prepare",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emzoo.data' has no attribute {name!r}")


__all__ = ["ArrayVolume", "Volume", "VolumeWriter", "create_volume", "denormalise", "normalise", "open_volume",
           "read_volume", "write_volume"] + list(_LAZY)
