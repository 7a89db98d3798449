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

# ``apps/`` and ``zoo_configs/`` sit beside this folder in the repository and are installed as
# ``emzoo.apps`` and ``emzoo.zoo_configs`` (setup.py's package_dir; editable installs map them
# the same way). Nothing else of the repository (tests, benchmarks) is importable as ``emzoo.*``.

from emzoo.errors import EmzooError
from emzoo.zoo import describe_model, list_models, load, save


# Public functions of heavier modules, imported on first use so that ``import emzoo`` stays light;
# each is the module's own function (real signature and docstring for help()).
_LAZY = {"upscale_volume": "emzoo.engine", "adapt": "emzoo.adaptation",
         "find_damage": "emzoo.engine.damage"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emzoo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["EmzooError", "__version__", "adapt", "describe_model", "find_damage", "list_models",
           "load", "save", "upscale_volume"]
