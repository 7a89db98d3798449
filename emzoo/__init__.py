"""emzoo: a Keras 3 model zoo for electron-microscopy slice interpolation and z-upscaling.

Example:
    >>> import emzoo
    >>> emzoo.list_models("film*")          # doctest: +SKIP
    ['film', 'film-ft-em', 'film-l1', 'film-sc-em', 'film-vgg', 'film-vimeo']
    >>> model = emzoo.load("default")        # doctest: +SKIP
    >>> out = model.predict({"x0": x0, "x1": x1, "time": t})["image"]  # doctest: +SKIP

``import emzoo`` imports Keras but never TensorFlow: TF-only modules (tf.data pipelines,
SavedModel export, tf.distribute) import it where they are used, so the library also runs
with ``KERAS_BACKEND=jax``.
"""

__version__ = "0.1.0"

import os as _os

# Installed, ``apps/`` and ``zoo_configs/`` live inside the package as ``emzoo.apps`` and
# ``emzoo.zoo_configs``. In a source checkout (editable install) they sit beside it: map them.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "setup.py")) and _os.path.isdir(_os.path.join(_root, "apps")):
    __path__.append(_root)  # noqa: F821 (the package's own search path)

from emzoo.errors import EmzooError  # noqa: E402
from emzoo.zoo import list_models, load, save, describe_model  # noqa: E402


def upscale_volume(*args, **kwargs):
    """Upscales a volume along z; see :func:`emzoo.upscale.upscale_volume`."""
    from emzoo import upscale

    return upscale.upscale_volume(*args, **kwargs)


__all__ = ["EmzooError", "__version__", "describe_model", "list_models", "load", "save",
           "upscale_volume"]
