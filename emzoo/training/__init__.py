"""Training and fine-tuning: what ``emzoo train`` does, as one function, :func:`train`.

The package is split by role:

* :mod:`~emzoo.training.config`: :class:`TrainConfig`, the resolved and checked settings of a run
  (what ``run_config.json`` stores), and :func:`parse_overrides`;
* :mod:`~emzoo.training.strategies`: ``tf.distribute`` strategies (``default``, ``mirrored``,
  ``multi_worker``), the chief, mixed precision;
* :mod:`~emzoo.training.keras_patches`: the private Keras internals the multi-worker path patches;
* :mod:`~emzoo.training.summaries`: TensorBoard scalars and images, the run's callback;
* :mod:`~emzoo.training.fit`: build, compile, data, the fit loop, checkpoints and exact resume,
  the final save.

A run writes ``run_config.json`` (the resolved configuration, the command and the emzoo version)
at the start, and at the end ``model.weights.h5`` + ``config.json`` (a zoo entry with the
validation scores and the training command in its metadata), so ``emzoo.load(output)`` gives the
trained model. Run folder layout::

    output/run_config.json      resolved configuration, command, emzoo version
    output/checkpoints/         tf.train.Checkpoint files (model + optimizer)
    output/logs/                TensorBoard event files
    output/latest/              the latest checkpoint's weights as a loadable entry
                                (``emzoo.load(output / "latest")`` while training or after a stop)
    output/config.json          zoo entry (written at the end)
    output/model.weights.h5     final weights (written at the end)

TensorFlow is imported when a run starts, not with this package.

Example:
    >>> from emzoo import training
    >>> summary = training.train("film", data=["stack.tif"], steps=2000, batch_size=8, crop=256,
    ...                          gaps=(1, 2, 4), output="runs/film-em")      # doctest: +SKIP
    >>> model = emzoo.load("runs/film-em")                                   # doctest: +SKIP
"""

from emzoo.training.config import RUN_CONFIG, TrainConfig, parse_overrides
from emzoo.training.fit import LATEST, build_model, compile_model, train
from emzoo.training.strategies import STRATEGIES, make_strategy
from emzoo.training.summaries import write_image_summary, write_scalar_summary

__all__ = ["LATEST", "RUN_CONFIG", "STRATEGIES", "TrainConfig", "build_model", "compile_model",
           "make_strategy", "parse_overrides", "train", "write_image_summary",
           "write_scalar_summary"]
