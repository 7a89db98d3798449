"""Exports of emzoo models for tools outside emzoo.

* ``emzoo.export.savedmodel``: a TensorFlow SavedModel called exactly like an original FILM
  SavedModel (``emzoo export NAME -o DIR``); its public functions are re-exported here.
* ``emzoo.export.bioimageio``: a bioimage.io model package (``emzoo export NAME --format
  bioimageio -o NAME.zip``; needs ``emzoo[bioimageio]``).

TensorFlow (and bioimageio.spec) are imported only when an export runs.

Example:
    >>> from emzoo.export import export_saved_model
    >>> export_saved_model(emzoo.load("default"), "exported/default")   # doctest: +SKIP
"""

from emzoo.export.savedmodel import build_serving_module, export_saved_model

__all__ = ["build_serving_module", "export_saved_model"]
