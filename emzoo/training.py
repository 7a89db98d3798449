"""Training and fine-tuning: strategies, compile/fit, checkpoints, exact resume, summaries.

One function, :func:`train`, does what ``emzoo train`` does:

* builds the model (a registered name, random weights; or a folder written by :func:`emzoo.save`,
  whose weights are the starting point for fine-tuning) and compiles it with the architecture's
  paper loss (loss-weight schedules follow the optimizer's step counter), Adam and the PSNR /
  SSIM / IE metrics, all inside the ``tf.distribute`` strategy's scope;
* trains with ``model.fit`` on :func:`emzoo.data.triplets.triplet_dataset` in epochs of
  ``checkpoint_every`` steps, writing a checkpoint (model and optimizer state, hence the step
  counter and the schedule position) at the end of each;
* resumes exactly: the latest checkpoint is restored and the training dataset, whose batch ``i``
  is a pure function of ``(seed, i)``, restarts at batch ``i = step`` (``initial_batch``), so a
  killed and resumed run sees the same batches at the same steps as an uninterrupted one;
* logs TensorBoard scalars (loss, metrics, learning rate) with the global step as x axis and image
  summaries (x0, x1, prediction, target of a fixed validation batch) at every checkpoint; shows one
  progress bar for the whole run with its ETA;
* writes ``run_config.json`` (the resolved configuration, the command and the emzoo version) at the
  start, and at the end ``model.weights.h5`` + ``config.json`` (a zoo entry with the validation
  scores and the training command in its metadata), so ``emzoo.load(output)`` gives the trained
  model.

Run folder layout::

    output/run_config.json      resolved configuration, command, emzoo version
    output/checkpoints/         tf.train.Checkpoint files (model + optimizer)
    output/logs/                TensorBoard event files
    output/latest/              the latest checkpoint's weights as a loadable entry
                                (``emzoo.load(output / "latest")`` while training or after a stop)
    output/config.json          zoo entry (written at the end)
    output/model.weights.h5     final weights (written at the end)

Strategies: ``default`` (one device), ``mirrored`` (all GPUs, else all logical CPUs:
``logical_cpus=2`` splits the CPU in two for tests), ``multi_worker``
(``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``; only the chief writes the run
folder, the other workers write their checkpoints to a scratch folder they delete). The batch
size is always the *global* batch: a distributed run sees the same batches as a single-device run.

Example:
    >>> from emzoo import training
    >>> summary = training.train("film", data=["stack.tif"], steps=2000, batch_size=8, crop=256,
    ...                          gaps=(1, 2, 4), output="runs/film-em")      # doctest: +SKIP
    >>> model = emzoo.load("runs/film-em")                                   # doctest: +SKIP
"""

import json
import math
import os
import pathlib
import shutil
import sys
import time

from emzoo.errors import EmzooError, describe

STRATEGIES = ("default", "mirrored", "multi_worker")
PIXEL_LOSSES = {"l1": "mean_absolute_error", "l2": "mean_squared_error",
                "mae": "mean_absolute_error", "mse": "mean_squared_error"}
RUN_CONFIG = "run_config.json"
LATEST = "latest"
# Settings that must not change when a run is resumed (the data and model they describe).
_RESUME_FIXED = ("model", "data", "batch_size", "crop", "gaps", "loss", "overrides", "seed",
                 "val_fraction", "optimizer", "learning_rate", "checkpoint_every", "mixed_precision",
                 "schedule_scale")


# ------------------------------------------------------------------------------------- helpers
def parse_overrides(items):
    """``["filters=16", "pyramid_levels=5", "use_x=true"]`` -> dict with JSON-typed values.

    Example:
        >>> parse_overrides(["filters=16", "name=abc", "flag=true"])
        {'filters': 16, 'name': 'abc', 'flag': True}
    """
    if isinstance(items, dict):
        return dict(items)
    overrides = {}
    for item in items or ():
        if isinstance(item, dict):
            overrides.update(item)
            continue
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise EmzooError(describe("Invalid value for argument `set`.", "key=value pairs",
                                      set=item))
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[key.strip()] = value
    return overrides


def _check_positive(name, value):
    try:
        ok = int(value) == float(value) and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise EmzooError(describe(f"Invalid value for argument `{name}`.", "an integer >= 1",
                                  **{name: value}))
    return int(value)


def _check_data(data):
    paths = [str(p) for p in ([data] if isinstance(data, (str, os.PathLike)) else data)]
    paths = [p for part in paths for p in part.split(",") if p]
    if not paths:
        raise EmzooError(describe("No training data given.", "one or more volume paths", data=data))
    from emzoo.data.volume import open_volume

    for path in paths:  # fail early, with one clear line, before anything is written
        with open_volume(path) as volume:
            if len(volume.shape) != 3:
                raise EmzooError(describe("The training data is not a z-stack.",
                                          "3-D volumes (Z, Y, X)", data=path, shape=volume.shape))
    return paths


def _check_model(model):
    """The model argument as recorded: a resolved folder path, or a known name."""
    from emzoo import zoo

    text = os.fspath(model)
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        zoo.describe_model(str(path))
        return str(path.resolve())
    try:
        zoo.describe_model(text)
    except zoo.UnknownModelError:
        if text not in zoo.architectures():
            raise
    return text


def _check_loss(loss):
    import keras

    if loss == "paper" or loss in PIXEL_LOSSES:
        return
    try:
        keras.losses.get(loss)
    except (ValueError, TypeError):
        raise EmzooError(describe(f"Unknown loss `{loss}`.", "paper, l1, l2 or a Keras loss name",
                                  loss=loss)) from None


def _check_crop(paths, crop, gaps):
    from emzoo.data.volume import open_volume

    for path in paths:
        with open_volume(path) as volume:
            depth, height, width = volume.shape
        if crop > min(height, width):
            raise EmzooError(describe(f"The crop is larger than the slices of {path}.",
                                      f"a crop of at most {min(height, width)} pixels",
                                      crop=crop, slices=f"{height}x{width}"))
        if depth < 2 * min(gaps) + 1:
            raise EmzooError(describe(f"{path} has too few slices for triplets with gaps {list(gaps)}.",
                                      f"at least {2 * min(gaps) + 1} slices", slices=depth))


def _is_chief():
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type", "chief") == "chief" or (
        task.get("type") == "worker" and int(task.get("index", 0)) == 0
        and "chief" not in config.get("cluster", {}))


def make_strategy(name, logical_cpus=None):
    """The ``tf.distribute`` strategy called ``name`` (see the module docstring)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise EmzooError(describe("Invalid value for argument `strategy`.",
                                  f"one of {', '.join(STRATEGIES)}", strategy=name))
    if logical_cpus:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(logical_cpus))])
        except RuntimeError as error:  # TF already initialised: keep what exists
            print(f"emzoo: note: cannot split the CPU into {logical_cpus} devices ({error}).",
                  file=sys.stderr)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if "TF_CONFIG" not in os.environ:
        raise EmzooError(describe("The multi_worker strategy needs a cluster description.",
                                  "the TF_CONFIG environment variable (cluster and task)",
                                  TF_CONFIG=None))
    return tf.distribute.MultiWorkerMirroredStrategy()


def _mixed_precision_policy(enabled):
    import keras
    import tensorflow as tf

    if not enabled:
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _build_model(model, weights, overrides):
    """(model, source kind) for a name or a saved folder; folders keep their weights (fine-tuning)."""
    import emzoo

    path = pathlib.Path(os.fspath(model)).expanduser()
    if path.is_dir():
        chosen = "default" if weights == "auto" else weights
        return emzoo.load(str(path), weights=chosen, compile=False, **overrides)
    chosen = None if weights == "auto" else weights
    from emzoo import zoo

    try:
        return emzoo.load(str(model), weights=chosen, compile=False, **overrides)
    except zoo.UnknownModelError:
        if str(model) not in zoo.architectures():
            raise
    # An architecture without a named entry of the same name: its default configuration.
    entry = {"name": str(model), "architecture": str(model), "config": {}, "metadata": {}}
    net = zoo.build_model(entry, **overrides)
    net.zoo_entry = {"name": str(model), "architecture": str(model), "config": net.get_config(),
                     "weights": None, "metadata": {}}
    return net


def _compile(model, loss, optimizer, learning_rate, jit_compile, schedule_scale=1.0):
    import keras

    if optimizer == "adam":
        opt = (model.default_optimizer() if learning_rate is None
               else keras.optimizers.Adam(learning_rate=learning_rate))
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=1e-2 if learning_rate is None else learning_rate)
    else:
        raise EmzooError(describe("Invalid value for argument `optimizer`.", "adam or sgd",
                                  optimizer=optimizer))
    if loss == "paper":
        from emzoo import losses

        loss_object = (model.default_loss() if schedule_scale == 1.0 else
                       losses.paper_loss(model.architecture, model.get_config(),
                                         schedule_scale=schedule_scale))
    elif loss in PIXEL_LOSSES:
        loss_object = keras.losses.get(PIXEL_LOSSES[loss])
    else:
        try:
            loss_object = keras.losses.get(loss)
        except (ValueError, TypeError):
            raise EmzooError(describe(f"Unknown loss `{loss}`.",
                                      "paper, l1, l2 or a Keras loss name", loss=loss)) from None
    model.compile(optimizer=opt, loss=loss_object, jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)  # optimizer slots exist before a restore
    return model


def _datasets(paths, gaps, crop, batch_size, seed, val_fraction, val_batches, channels, initial_batch):
    """(train dataset: endless, a pure function of (seed, batch index), starting at
    ``initial_batch``; validation dataset: fixed centre crops of the validation z-range)."""
    import tensorflow as tf

    from emzoo.data.triplets import triplet_dataset, validation_triplets

    extra = {} if val_fraction is None else {"val_fraction": val_fraction}
    train = triplet_dataset(paths, gaps=tuple(gaps), crop=crop, batch_size=batch_size, split="train",
                            seed=seed, channels=channels, initial_batch=initial_batch, **extra)
    validation = validation_triplets(paths, gaps=tuple(gaps), crop=crop, batch_size=batch_size,
                                     channels=channels, **extra).take(val_batches)
    options = tf.data.Options()
    # Elements are generated, not read from files: each worker computes the global batch and
    # keeps its share of it, so a distributed run sees exactly the single-device batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return train.with_options(options), validation.with_options(options)


def _prebuild_for_multi_worker(net, dataset, strategy):
    """Builds the compiled metrics from one local batch, then skips Keras' own symbolic build.

    Keras 3 (3.15) ``fit`` / ``evaluate`` build metrics by ``strategy.reduce``-ing a distributed
    sample batch; ``MultiWorkerMirroredStrategy`` cannot reduce the dict inputs of an
    interpolator ("Attempt to convert a value ({'x0': PerReplica ...}) to a Tensor"). Building
    from a plain batch first gives the same variables without the reduce.
    """
    inputs, target = next(iter(dataset.take(1)))
    with strategy.scope():
        net._symbolic_build(data_batch=(inputs, target, None))
    net._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    # Keras 3.15 also reduces the (scalar) logs across workers with
    # strategy.reduce("MEAN", v, axis=0), which fails on scalars: reduce them with axis=None.
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not getattr(tf_trainer.reduce_per_replica, "_emzoo_patched", False):
        original = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy_, reduction):
            import tensorflow as tf

            if isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy) and reduction in ("auto", "mean"):
                return tf.nest.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=None), values)
            return original(values, strategy_, reduction)

        reduce_per_replica._emzoo_patched = True
        tf_trainer.reduce_per_replica = reduce_per_replica


# ----------------------------------------------------------------------------------- callbacks
def _tensorboard_installed():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _plugin_summary(name, tensor, step, plugin):
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return tf.summary.write(tag=name, tensor=tensor, step=step, metadata=metadata)


def write_scalar_summary(name, value, step):
    """``tf.summary.scalar`` that also works without the ``tensorboard`` package installed.

    (tensorflow-cpu does not pull tensorboard in; the event files are the same: what
    TensorBoard's scalar plugin reads.)
    """
    import tensorflow as tf

    if _tensorboard_installed():
        return tf.summary.scalar(name, value, step=step)
    return _plugin_summary(name, tf.constant(float(value), tf.float32), step, "scalars")


def write_image_summary(name, images, step, max_outputs=3):
    """``tf.summary.image`` that also works without the ``tensorboard`` package installed.

    Writes what TensorBoard's image plugin reads: a string tensor ``[width, height, png...]``.
    """
    import numpy as np
    import tensorflow as tf

    images = np.clip(np.asarray(images, np.float32)[:max_outputs], 0.0, 1.0)
    if _tensorboard_installed():
        return tf.summary.image(name, images, step=step, max_outputs=max_outputs)
    encoded = [tf.io.encode_png(tf.constant((image * 255.0 + 0.5).astype(np.uint8))) for image in images]
    height, width = images.shape[1:3]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height))] + encoded)
    return _plugin_summary(name, tensor, step, "images")


class _RunCallbacks:
    """Factory for the callbacks of one run (kept together: they share the run's state)."""

    @staticmethod
    def make(total_steps, manager, writer, image_batch, log_every, verbose, on_checkpoint=None):
        import keras
        import numpy as np

        class RunCallback(keras.callbacks.Callback):
            """Stops at ``total_steps``, checkpoints each epoch, logs scalars/images, progress."""

            def on_train_begin(self, logs=None):
                self.start_step = int(self.model.optimizer.iterations.numpy())
                self.started = time.time()
                self.bar = keras.utils.Progbar(total_steps, verbose=1 if verbose else 0,
                                               unit_name="step") if verbose else None
                if self.bar is not None and self.start_step:
                    self.bar.update(self.start_step)

            def _step(self):
                return int(self.model.optimizer.iterations.numpy())

            def on_train_batch_end(self, batch, logs=None):
                step = self._step()
                logs = {k: float(v) for k, v in (logs or {}).items()}
                if self.bar is not None:
                    self.bar.update(step, values=list(logs.items()))
                if writer is not None and (step % log_every == 0 or step >= total_steps):
                    with writer.as_default(step=step):
                        for name, value in logs.items():
                            write_scalar_summary(f"train/{name}", value, step)
                        rate = self.model.optimizer.learning_rate
                        write_scalar_summary("train/learning_rate", float(np.asarray(rate)), step)
                        done = step - self.start_step
                        write_scalar_summary("train/steps_per_second",
                                             done / max(time.time() - self.started, 1e-9), step)
                if step >= total_steps:
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                step = self._step()
                manager.save(checkpoint_number=step)
                if image_batch is not None:  # every worker predicts (a collective op)
                    inputs, target = image_batch
                    prediction = self.model.predict_on_batch(inputs)
                    prediction = prediction["image"] if isinstance(prediction, dict) else prediction
                if writer is not None and image_batch is not None:
                    with writer.as_default(step=step):
                        write_image_summary("images/x0", inputs["x0"], step)
                        write_image_summary("images/x1", inputs["x1"], step)
                        write_image_summary("images/prediction", np.asarray(prediction, np.float32), step)
                        write_image_summary("images/target", target, step)
                    writer.flush()
                if on_checkpoint is not None:
                    on_checkpoint(step)

        return RunCallback()


# ---------------------------------------------------------------------------------------- train
def resolve_config(model, data, steps, batch_size=8, crop=256, gaps=(1, 2, 4), strategy="default",
                   overrides=None, loss="paper", learning_rate=None, optimizer="adam",
                   checkpoint_every=500, val_fraction=None, val_batches=4, seed=0,
                   mixed_precision=False, weights="auto", log_every=50, logical_cpus=None,
                   jit_compile="auto", schedule_scale=1.0):
    """The validated, JSON-ready configuration of a run (what ``run_config.json`` holds)."""
    if isinstance(gaps, str):
        gaps = [g for g in gaps.split(",") if g.strip()]
    gaps = [_check_positive("gaps", g) for g in gaps]
    if not gaps:
        raise EmzooError(describe("Invalid value for argument `gaps`.", "one or more integers >= 1",
                                  gaps=gaps))
    if strategy not in STRATEGIES:
        raise EmzooError(describe("Invalid value for argument `strategy`.",
                                  f"one of {', '.join(STRATEGIES)}", strategy=strategy))
    if learning_rate is not None and not float(learning_rate) > 0:
        raise EmzooError(describe("Invalid value for argument `learning_rate`.", "a number > 0",
                                  learning_rate=learning_rate))
    if val_fraction is not None and not 0 < float(val_fraction) < 1:
        raise EmzooError(describe("Invalid value for argument `val_fraction`.",
                                  "a number between 0 and 1", val_fraction=val_fraction))
    model_text = _check_model(model)
    _check_loss(loss)
    return {
        "model": model_text,
        "data": [str(pathlib.Path(p).resolve()) if ":" not in p else p for p in _check_data(data)],
        "steps": _check_positive("steps", steps),
        "batch_size": _check_positive("batch_size", batch_size),
        "crop": _check_positive("crop", crop),
        "gaps": gaps,
        "strategy": strategy,
        "overrides": parse_overrides(overrides),
        "loss": str(loss),
        "learning_rate": None if learning_rate is None else float(learning_rate),
        "optimizer": optimizer,
        "checkpoint_every": _check_positive("checkpoint_every", checkpoint_every),
        "val_fraction": None if val_fraction is None else float(val_fraction),
        "val_batches": _check_positive("val_batches", val_batches),
        "seed": int(seed),
        "mixed_precision": bool(mixed_precision),
        "weights": weights if weights in ("auto", None, "default") else str(weights),
        "log_every": _check_positive("log_every", log_every),
        "logical_cpus": None if not logical_cpus else int(logical_cpus),
        "jit_compile": jit_compile,
        "schedule_scale": float(schedule_scale),
    }


def _prepare_output(output, config, resume):
    """Creates or checks the run folder; returns the stored config when resuming."""
    output = pathlib.Path(output)
    stored_path = output / RUN_CONFIG
    if stored_path.is_file():
        if not resume:
            raise EmzooError(describe(f"{output} already holds a training run.",
                                      "--resume to continue it, or a new --output folder",
                                      output=str(output)))
        stored = json.loads(stored_path.read_text(encoding="utf-8"))["config"]
        changed = [k for k in _RESUME_FIXED if stored.get(k) != config.get(k)]
        if changed:
            raise EmzooError(describe(
                f"Cannot resume {output} with different settings ({', '.join(changed)}).",
                "the settings of the original run (see its run_config.json)",
                **{k: config.get(k) for k in changed}))
        return stored
    if output.exists() and any(output.iterdir()) and not resume:
        raise EmzooError(describe(f"The output folder {output} exists and is not empty.",
                                  "a new or empty folder", output=str(output)))
    return None


def train(model, data, steps, batch_size=8, crop=256, gaps=(1, 2, 4), strategy="default",
          output="runs/emzoo", overrides=None, resume=False, mixed_precision=False,
          learning_rate=None, checkpoint_every=500, loss="paper", val_fraction=None,
          val_batches=4, seed=0, weights="auto", optimizer="adam", log_every=50,
          logical_cpus=None, jit_compile="auto", schedule_scale=1.0, callbacks=None, command=None,
          verbose=True):
    """Trains (or fine-tunes, or resumes) a model; see the module docstring.

    Args:
        model: architecture / entry name (random initial weights) or a folder written by
            :func:`emzoo.save` (its weights are the starting point).
        data: volume path(s) (list or comma-separated string).
        steps: total optimizer steps of the run (a resumed run continues up to it).
        batch_size: global batch size (split across replicas).
        crop: square crop size of the training triplets.
        gaps: triplet gaps (z - g, z, z + g); several gaps train x2, x4, x8 at once.
        strategy: ``default``, ``mirrored`` or ``multi_worker``.
        output: the run folder.
        overrides: model constructor arguments, dict or ``["key=value", ...]``.
        resume: continue the run in ``output`` from its latest checkpoint.
        mixed_precision: ``mixed_float16`` on GPU, ``mixed_bfloat16`` on CPU.
        learning_rate: Adam learning rate (default: the architecture's).
        checkpoint_every: steps between checkpoints (the length of one Keras epoch).
        loss: ``paper`` (the architecture's paper loss with its schedule), ``l1``, ``l2`` or a
            Keras loss name.
        val_fraction: fraction of each volume's z-range kept for validation (pipeline default
            when None).
        val_batches: validation batches scored at the end.
        seed: seed of the data pipeline and of the initial weights.
        weights: ``auto`` (random for names, the folder's for folders), ``default`` (the entry's
            weights), None (random) or a weights path.
        optimizer: ``adam`` (default) or ``sgd``.
        log_every: steps between TensorBoard scalar summaries.
        logical_cpus: split the CPU into this many logical devices (testing ``mirrored``).
        jit_compile: passed to ``compile`` (``"auto"``, True or False).
        schedule_scale: multiplies the paper loss's schedule boundaries (FILM switches its loss
            weights at step 1.5M; ``1e-3`` switches at 1,500 for short runs).
        callbacks: extra Keras callbacks, run after the run's own (checkpoint, summaries).
        command: the command line to record (default: ``sys.argv``).
        verbose: progress bar and summary lines.

    Returns:
        dict with ``output``, ``steps`` (optimizer steps done), ``resumed_from``, ``validation``
        (loss, psnr, ssim, ie on the validation split) and ``seconds``.
    """
    started = time.time()
    config = resolve_config(model, data, steps, batch_size, crop, gaps, strategy, overrides, loss,
                            learning_rate, optimizer, checkpoint_every, val_fraction, val_batches,
                            seed, mixed_precision, weights, log_every, logical_cpus, jit_compile,
                            schedule_scale)
    _check_crop(config["data"], config["crop"], config["gaps"])
    output = pathlib.Path(output)
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy_object = make_strategy(config["strategy"], config["logical_cpus"])
    chief = _is_chief() if config["strategy"] == "multi_worker" else True
    if chief:
        _prepare_output(output, config, resume)

    import keras
    import tensorflow as tf

    import emzoo

    policy = _mixed_precision_policy(config["mixed_precision"])
    keras.utils.set_random_seed(config["seed"])
    replicas = strategy_object.num_replicas_in_sync
    if config["batch_size"] % replicas:
        raise EmzooError(describe("The batch size does not split evenly across replicas.",
                                  f"a multiple of {replicas} (the number of replicas)",
                                  batch_size=config["batch_size"]))
    command = list(sys.argv if command is None else command)
    checkpoint_dir = output / "checkpoints"
    if not chief:  # non-chief workers take part in saving, into a scratch folder
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        checkpoint_dir = output / f".worker-{task.get('type')}-{task.get('index')}"

    with strategy_object.scope():
        net = _build_model(config["model"], config["weights"], config["overrides"])
        _compile(net, config["loss"], config["optimizer"], config["learning_rate"], config["jit_compile"],
                 config["schedule_scale"])
        checkpoint = tf.train.Checkpoint(model=net, optimizer=net.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=3)
    resumed_from = 0
    if resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        resumed_from = int(net.optimizer.iterations.numpy())
    elif resume and verbose:
        print(f"emzoo: no checkpoint in {checkpoint_dir}; starting from step 0.", file=sys.stderr)
    total = config["steps"]
    every = config["checkpoint_every"]

    train_ds, val_ds = _datasets(config["data"], config["gaps"], config["crop"], config["batch_size"],
                                 config["seed"], config["val_fraction"], config["val_batches"],
                                 net.channels, resumed_from)
    if chief:
        output.mkdir(parents=True, exist_ok=True)
        if not (output / RUN_CONFIG).is_file():
            record = {"config": config, "command": command, "emzoo_version": emzoo.__version__,
                      "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
                      "dtype_policy": policy, "replicas": replicas, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            tmp = output / (RUN_CONFIG + ".tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, output / RUN_CONFIG)
    image_batch = None
    writer = None
    for inputs, target in val_ds.take(1):
        image_batch = ({k: v.numpy()[:3] for k, v in inputs.items()}, target.numpy()[:3])
    if chief:
        writer = tf.summary.create_file_writer(str(output / "logs"))
    if verbose and chief:
        print(f"emzoo: training {config['model']} for {total} steps "
              f"({'resuming at step ' + str(resumed_from) if resumed_from else 'from step 0'}), "
              f"{replicas} replica(s), batch {config['batch_size']}, crop {config['crop']}, "
              f"gaps {config['gaps']}, {policy}; run folder {output}", file=sys.stderr)
    if config["strategy"] == "multi_worker":
        _prebuild_for_multi_worker(net, train_ds, strategy_object)
    if resumed_from < total:
        def save_latest(step):
            # A loadable copy of the latest checkpoint's weights: emzoo.load(output / "latest")
            # works while the run goes on or after it was stopped.
            emzoo.save(net, output / LATEST, name=f"{output.name}-step-{step}",
                       metadata={"training": {"command": " ".join(command), "steps": step,
                                              "initial_model": config["model"]}},
                       overwrite=True)

        callback = _RunCallbacks.make(total, manager, writer, image_batch, config["log_every"],
                                      verbose and chief, on_checkpoint=save_latest if chief else None)
        net.fit(train_ds, epochs=math.ceil(total / every),
                initial_epoch=resumed_from // every, steps_per_epoch=every,
                callbacks=[callback] + list(callbacks or ()), shuffle=False,
                verbose=0)
        if verbose and chief:
            print(file=sys.stderr)
    done = int(net.optimizer.iterations.numpy())
    validation = net.evaluate(val_ds, verbose=0, return_dict=True)
    validation = {k: float(v) for k, v in validation.items()}
    if writer is not None:
        with writer.as_default(step=done):
            for name, value in validation.items():
                write_scalar_summary(f"validation/{name}", value, done)
        writer.flush()
    if chief:
        metadata = {
            "description": f"{net.architecture} trained with emzoo train on {', '.join(os.path.basename(p) for p in config['data'])}",
            "trained_on": config["data"],
            "training": {"command": " ".join(command), "steps": done,
                         **{k: config[k] for k in ("batch_size", "crop", "gaps", "loss", "optimizer",
                                                   "learning_rate", "strategy", "seed", "mixed_precision",
                                                   "val_fraction", "overrides")},
                         "initial_model": config["model"], "emzoo_version": emzoo.__version__},
            "validation": validation,
        }
        emzoo.save(net, output, name=output.name, metadata=metadata, overwrite=True)
    else:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    seconds = time.time() - started
    if verbose and chief:
        scores = ", ".join(f"{k} {v:.4g}" for k, v in validation.items())
        print(f"emzoo: {done} steps done in {seconds:.0f} s; validation: {scores}; "
              f"saved to {output} (emzoo.load({str(output)!r}))", file=sys.stderr)
    return {"output": str(output), "steps": done, "resumed_from": resumed_from,
            "validation": validation, "seconds": seconds, "replicas": replicas}
