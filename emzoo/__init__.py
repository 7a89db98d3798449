"""emzoo: a Keras 3 model zoo for electron-microscopy slice interpolation and z-upscaling.

Example:
    >>> import emzoo
    >>> emzoo.list_models("film*")          # doctest: +SKIP
    ['film', 'film-ft-em', 'film-l1', 'film-sc-em', 'film-vgg', 'film-vimeo']
    >>> model = emzoo.load("default")        # doctest: +SKIP
    >>> out = model.predict({"x0": x0, "x1": x1, "time": t})["image"]  # doctest: +SKIP

Volume jobs: ``emzoo.upscale_volume`` / ``emzoo.repair_volume`` in one call, or planned first
(everything checked before any work) and then run, with progress and cancel hooks::

    plan = emzoo.plan_upscale("stack.tif", factor=4, output="iso.tif",
                              options=emzoo.EngineOptions(tile=1024))
    result = emzoo.run(plan, "default", progress=lambda done, total: None)

Environment variables, all of them (each is read where it acts):

- ``EMZOO_HOME``: the weights cache (default ``~/.cache/emzoo``; :mod:`emzoo.weights`).
- ``EMZOO_OFFLINE=1``: never touch the network; a missing file is an error naming where it
  belongs (:mod:`emzoo.weights`).
- ``EMZOO_VGG_WEIGHTS``: the VGG features of the perceptual losses, ``imagenet`` (default),
  ``matconvnet``, ``random`` or a path (:mod:`emzoo.losses.vgg`).
- ``EMZOO_MAX_OUTPUT_BYTES``: the largest volume a job writes (default 1 TiB;
  :mod:`emzoo.engine.sources`).
- ``EMZOO_FORCE_BF16=1``: run bf16 where support cannot be told (:mod:`emzoo.engine.precision`).
- ``KERAS_BACKEND``: ``tensorflow`` (default) or ``jax``; ``TF_CONFIG``: the cluster of a
  multi-worker training run (:mod:`emzoo.training.strategies`); ``TF_CPP_MIN_LOG_LEVEL``: set to
  3 by the apps unless ``--verbose`` (:mod:`emzoo.engine.quiet`), unless already set.

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
_LAZY = {"upscale_volume": "emzoo.engine", "repair_volume": "emzoo.engine",
         "plan_upscale": "emzoo.engine", "plan_repair": "emzoo.engine", "run": "emzoo.engine",
         "EngineOptions": "emzoo.engine", "Blockwise": "emzoo.engine",
         "adapt": "emzoo.adaptation", "find_damage": "emzoo.engine.damage"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emzoo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Blockwise", "EmzooError", "EngineOptions", "__version__", "adapt", "describe_model",
           "find_damage", "list_models", "load", "plan_repair", "plan_upscale", "repair_volume",
           "run", "save", "upscale_volume"]
