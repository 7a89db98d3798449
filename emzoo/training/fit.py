"""The fit loop of ``emzoo train``: build, compile, data, checkpoints, exact resume, final save.

* The model is a registered name or a folder written by :func:`emzoo.save`; it starts from its
  trained weights when it has them (fine-tuning; random weights otherwise or with
  ``weights=None``, see :func:`emzoo.training.config.initial_weights`) and is compiled with the
  loss (by default the one its entry records it was trained with, else the architecture's paper
  loss, whose weight schedules follow the optimizer's step counter), Adam and the PSNR / SSIM /
  IE metrics, all inside the strategy's scope.
* ``model.fit`` runs on :func:`emzoo.data.triplets.triplet_dataset` in epochs of
  ``checkpoint_every`` steps; each epoch ends with a checkpoint (model and optimizer state, hence
  the step counter and the schedule position).
* Resume is exact: the latest checkpoint is restored and the training dataset, whose batch ``i``
  is a pure function of ``(seed, i)``, restarts at batch ``i = step`` (``initial_batch``), so a
  killed and resumed run sees the same batches at the same steps as an uninterrupted one.
"""

import json
import math
import os
import pathlib
import shutil
import sys
import time

from emzoo.errors import EmzooError, TrainingInterrupted, describe
from emzoo.training import strategies
from emzoo.training.config import (RUN_CONFIG, TrainConfig, initial_weights, keras_loss,
                                   recorded_loss)
from emzoo.training.summaries import run_callback, write_scalar_summary

LATEST = "latest"
# The settings recorded in the final model's metadata, under "training".
_RECORDED = ("batch_size", "crop", "gaps", "loss", "optimizer", "learning_rate", "strategy", "seed",
             "precision", "val_fraction", "overrides", "weights")


def build_model(model, weights="auto", overrides=None):
    """The model for a name or a saved folder, with its starting weights.

    ``weights="auto"`` means the trained weights of the entry or folder when it has them, else
    random weights (:func:`emzoo.training.config.initial_weights`); ``"default"``, None (random)
    or a weights path as for :func:`emzoo.load`.
    """
    import emzoo
    from emzoo import zoo

    overrides = dict(overrides or {})
    path = pathlib.Path(os.fspath(model)).expanduser()
    model = str(path) if path.is_dir() else str(model)
    chosen = initial_weights(model, weights, overrides)[0] if weights == "auto" else weights
    try:
        return emzoo.load(model, weights=chosen, compile=False, **overrides)
    except zoo.UnknownModelError:
        if str(model) not in zoo.architectures():
            raise
    # An architecture without a named entry of the same name: its default configuration.
    entry = {"name": str(model), "architecture": str(model), "config": {}, "metadata": {}}
    net = zoo.build_model(entry, **overrides)
    net.zoo_entry = {"name": str(model), "architecture": str(model), "config": net.get_config(),
                     "weights": None, "metadata": {}}
    if chosen not in (None, "default"):
        from emzoo import weights as weights_lib

        weights_lib.load_into(net, chosen, weights_lib.guess_format(chosen), entry=net.zoo_entry)
    return net


def compile_model(model, loss="paper", optimizer="adam", learning_rate=None, jit_compile="auto",
                  schedule_scale=1.0):
    """Compiles ``model`` the way ``emzoo train`` does and builds its optimizer's slots.

    ``loss="paper"`` is the model's :meth:`paper_loss` (with its zoo entry's loss variant, e.g.
    ``film-l1``'s L1 only) whose schedule boundaries are multiplied by ``schedule_scale``;
    ``loss="auto"`` the loss its zoo entry records it was trained with, else ``paper``.
    """
    import keras

    if loss == "auto":
        loss = recorded_loss(getattr(model, "zoo_entry", None) or {}) or "paper"
    if optimizer == "adam":
        opt = (model.default_optimizer() if learning_rate is None
               else keras.optimizers.Adam(learning_rate=learning_rate))
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=1e-2 if learning_rate is None else learning_rate)
    else:
        raise EmzooError(describe("Invalid value for argument `optimizer`.", "adam or sgd",
                                  optimizer=optimizer))
    if loss == "paper":
        loss_object = model.paper_loss(schedule_scale=schedule_scale)
    else:
        loss_object = keras_loss(loss)
    model.compile(optimizer=opt, loss=loss_object, jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)  # optimizer slots exist before a restore
    return model


def validation_dataset(config, channels, replicas=1):
    """The validation batches scored at the end: the first ``val_batches`` batches of the fixed
    centre crops of the validation z-range.

    With several replicas every batch must split evenly across them (Keras sums the replicas'
    per-sample values, and a replica with a smaller or empty share fails there). When the number
    of triplets ``n`` is not a multiple of ``replicas``, each triplet is therefore repeated
    ``replicas / gcd(n, replicas)`` times in a row: every batch (a multiple of ``replicas``, as is
    the batch size) then splits evenly, and the means over triplets (loss, PSNR, SSIM, IE) are
    those of the triplets themselves.
    """
    import tensorflow as tf

    from emzoo.data.triplets import validation_triplets

    extra = {} if config.val_fraction is None else {"val_fraction": config.val_fraction}
    common = dict(gaps=tuple(config.gaps), crop=config.crop, channels=channels, **extra)
    batch, batches = config.batch_size, config.val_batches
    validation = validation_triplets(list(config.data), batch_size=batch, **common).take(batches)
    if replicas <= 1:
        return validation
    singles = validation_triplets(list(config.data), batch_size=1, **common).take(batch * batches)
    count = int(singles.cardinality())
    repeats = replicas // math.gcd(count, replicas) if count > 0 else 1
    if repeats == 1:
        return validation
    return (singles.unbatch()
            .flat_map(lambda inputs, y: tf.data.Dataset.from_tensors((inputs, y)).repeat(repeats))
            .batch(batch))


def datasets(config, channels, initial_batch, replicas=1):
    """(train dataset: endless, a pure function of (seed, batch index), starting at
    ``initial_batch``; validation dataset: :func:`validation_dataset`)."""
    import tensorflow as tf

    from emzoo.data.triplets import triplet_dataset

    extra = {} if config.val_fraction is None else {"val_fraction": config.val_fraction}
    train = triplet_dataset(list(config.data), split="train", seed=config.seed,
                            initial_batch=initial_batch, gaps=tuple(config.gaps), crop=config.crop,
                            batch_size=config.batch_size, channels=channels, **extra)
    validation = validation_dataset(config, channels, replicas)
    options = tf.data.Options()
    # Elements are generated, not read from files: each worker computes the global batch and
    # keeps its share of it, so a distributed run sees exactly the single-device batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return train.with_options(options), validation.with_options(options)


def prepare_output(output, config, resume):
    """Creates or checks the run folder; returns the stored :class:`TrainConfig` when resuming."""
    output = pathlib.Path(output)
    stored_path = output / RUN_CONFIG
    if stored_path.is_file():
        if not resume:
            raise EmzooError(describe(f"{output} already holds a training run.",
                                      "--resume to continue it, or a new --output folder",
                                      output=str(output)))
        stored = json.loads(stored_path.read_text(encoding="utf-8"))["config"]
        changed = config.resume_changes(stored)
        if changed:
            current = config.to_json()
            raise EmzooError(describe(
                f"Cannot resume {output} with different settings ({', '.join(changed)}).",
                "the settings of the original run (see its run_config.json)",
                **{k: current.get(k) for k in changed}))
        return TrainConfig.from_json(stored)
    if output.exists() and any(output.iterdir()) and not resume:
        raise EmzooError(describe(f"The output folder {output} exists and is not empty.",
                                  "a new or empty folder", output=str(output)))
    return None


def _write_run_config(output, config, command, policy, replicas):
    """Writes ``run_config.json`` (atomically) unless the run folder has one already."""
    import keras
    import tensorflow as tf

    import emzoo

    output.mkdir(parents=True, exist_ok=True)
    if (output / RUN_CONFIG).is_file():
        return
    record = {"config": config.to_json(), "command": command, "emzoo_version": emzoo.__version__,
              "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
              "dtype_policy": policy, "replicas": replicas,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    from emzoo.atomic import write_json

    write_json(output / RUN_CONFIG, record)


def _final_metadata(net, config, command, done, validation, start):
    import emzoo

    recorded = config.to_json()
    return {
        "description": f"{net.architecture} trained with emzoo train on "
                       f"{', '.join(os.path.basename(p) for p in config.data)}",
        "trained_on": list(config.data),
        "training": {"command": " ".join(command), "steps": done,
                     **{k: recorded[k] for k in _RECORDED},
                     "initial_model": config.model, "initial_weights": start,
                     "emzoo_version": emzoo.__version__},
        "validation": validation,
    }


def train(model, data, steps, batch_size=8, crop=256, gaps=(1, 2, 4), strategy="default",
          output="runs/emzoo", overrides=None, resume=False, precision="float32",
          learning_rate=None, checkpoint_every=500, loss="auto", val_fraction=None,
          val_batches=4, seed=0, weights="auto", optimizer="adam", log_every=50,
          logical_cpus=None, jit_compile="auto", schedule_scale=1.0, callbacks=None, command=None,
          verbose=True):
    """Trains (or fine-tunes, or resumes) a model; see :mod:`emzoo.training`.

    Args:
        model: architecture / entry name or a folder written by :func:`emzoo.save`; its trained
            weights are the starting point when it has them (see ``weights``).
        data: volume path(s) (list or comma-separated string).
        steps: total optimizer steps of the run (a resumed run continues up to it).
        batch_size: global batch size (split across replicas).
        crop: square crop size of the training triplets.
        gaps: triplet gaps (z - g, z, z + g); several gaps train x2, x4, x8 at once.
        strategy: ``default``, ``mirrored`` or ``multi_worker``.
        output: the run folder.
        overrides: model constructor arguments, dict or ``["key=value", ...]``.
        resume: continue the run in ``output`` from its latest checkpoint.
        precision: what the training computes in (weights stay float32): ``"float32"``,
            ``"bf16"`` (Keras mixed_bfloat16), ``"float16"`` (mixed_float16, for GPUs), or
            ``"auto"`` (float32) or ``"mixed"`` (float16 with a GPU, bf16 without).
        learning_rate: Adam learning rate (default: the architecture's).
        checkpoint_every: steps between checkpoints (the length of one Keras epoch).
        loss: ``auto`` (the loss the entry records it was trained with, e.g. ``default``'s
            ``l2``, else ``paper``), ``paper`` (the architecture's paper loss with its
            schedule), ``l1``, ``l2`` or a Keras loss name.
        val_fraction: fraction of each volume's z-range kept for validation (pipeline default
            when None).
        val_batches: validation batches scored at the end.
        seed: seed of the data pipeline and of the initial weights.
        weights: ``auto`` (the entry's or folder's trained weights when available, else
            random), ``default`` (the entry's weights, an error without them), None or ``"none"``
            (random: from scratch) or a weights path.
        optimizer: ``adam`` (default) or ``sgd``.
        log_every: steps between TensorBoard scalar summaries.
        logical_cpus: split the CPU into this many logical devices (testing ``mirrored``).
        jit_compile: passed to ``compile`` (``"auto"``, True or False).
        schedule_scale: multiplies the paper loss's schedule boundaries (FILM switches its loss
            weights at step 1.5M; ``1e-3`` switches at 1,500 for short runs).
        callbacks: extra Keras callbacks, run after the run's own (checkpoint, summaries).
        command: the command line to record (default: ``sys.argv``).
        verbose: progress (a bar on a terminal, a line every 30 s in a log) and summary lines.

    Returns:
        dict with ``output``, ``steps`` (optimizer steps done), ``resumed_from``, ``validation``
        (loss, psnr, ssim, ie on the validation split) and ``seconds``.

    Raises:
        TrainingInterrupted: Ctrl-C or SIGTERM while training; the run folder and its checkpoints
            are kept, and the same call with ``resume=True`` continues from the last one.
    """
    started = time.time()
    config = TrainConfig.resolve(
        model, data, steps, batch_size=batch_size, crop=crop, gaps=gaps, strategy=strategy,
        overrides=overrides, loss=loss, learning_rate=learning_rate, optimizer=optimizer,
        checkpoint_every=checkpoint_every, val_fraction=val_fraction, val_batches=val_batches,
        seed=seed, precision=precision, weights=weights, log_every=log_every,
        logical_cpus=logical_cpus, jit_compile=jit_compile, schedule_scale=schedule_scale)
    import keras

    previous = keras.config.dtype_policy()  # set for the run (precision), restored after
    try:
        return _run(config, pathlib.Path(output), resume=resume, callbacks=callbacks,
                    command=list(sys.argv if command is None else command), verbose=verbose,
                    started=started)
    finally:
        keras.config.set_dtype_policy(previous)
        if config.strategy == "multi_worker":
            from emzoo.training import keras_patches

            keras_patches.restore_reduce_per_replica()


def _run(config, output, *, resume, callbacks, command, verbose, started):
    """The run of :func:`train` once its configuration is resolved."""
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = strategies.make_strategy(config.strategy, config.logical_cpus)
    chief = strategies.is_chief() if config.strategy == "multi_worker" else True
    if chief:
        prepare_output(output, config, resume)

    import keras
    import tensorflow as tf

    import emzoo

    policy = strategies.set_precision_policy(config.precision)
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise EmzooError(describe("The batch size does not split evenly across replicas.",
                                  f"a multiple of {replicas} (the number of replicas)",
                                  batch_size=config.batch_size))
    # Non-chief workers take part in saving, into a scratch folder.
    checkpoint_dir = output / "checkpoints" if chief else strategies.scratch_folder(output)

    chosen, start = initial_weights(config.model, config.weights, config.overrides)
    with strategy.scope():
        net = build_model(config.model, chosen, config.overrides)
        compile_model(net, config.loss, config.optimizer, config.learning_rate, config.jit_compile,
                      config.schedule_scale)
        checkpoint = tf.train.Checkpoint(model=net, optimizer=net.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=3)
    resumed_from = 0
    if resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        resumed_from = int(net.optimizer.iterations.numpy())
    elif resume and verbose:
        print(f"emzoo: no checkpoint in {checkpoint_dir}; starting from step 0.", file=sys.stderr)
    total, every = config.steps, config.checkpoint_every

    train_ds, val_ds = datasets(config, net.channels, resumed_from, replicas)
    if chief:
        _write_run_config(output, config, command, policy, replicas)
    image_batch = None
    writer = None
    for inputs, target in val_ds.take(1):
        image_batch = ({k: v.numpy()[:3] for k, v in inputs.items()}, target.numpy()[:3])
    if chief:
        writer = tf.summary.create_file_writer(str(output / "logs"))
    if verbose and chief:
        print(f"emzoo: {start}, {total} steps "
              f"({'resuming at step ' + str(resumed_from) if resumed_from else 'from step 0'}), "
              f"loss {config.loss}, {replicas} replica(s), batch {config.batch_size}, crop {config.crop}, "
              f"gaps {list(config.gaps)}, {policy}; run folder {output}", file=sys.stderr)
    if config.strategy == "multi_worker":
        strategies.prebuild_for_multi_worker(net, train_ds, strategy)
    if resumed_from < total:
        def save_latest(step):
            # A loadable copy of the latest checkpoint's weights: emzoo.load(output / "latest")
            # works while the run goes on or after it was stopped.
            emzoo.save(net, output / LATEST, name=f"{output.name}-step-{step}",
                       metadata={"training": {"command": " ".join(command), "steps": step,
                                              "initial_model": config.model,
                                              "loss": config.loss}},
                       overwrite=True)

        callback = run_callback(total, manager, writer, image_batch, config.log_every,
                                verbose and chief, on_checkpoint=save_latest if chief else None)
        try:
            net.fit(train_ds, epochs=math.ceil(total / every),
                    initial_epoch=resumed_from // every, steps_per_epoch=every,
                    callbacks=[callback] + list(callbacks or ()), shuffle=False,
                    verbose=0)
        except KeyboardInterrupt as stop:   # Ctrl-C / SIGTERM: the checkpoints stay
            last = manager.latest_checkpoint
            raise TrainingInterrupted(output, int(last.rpartition("-")[2]) if last else 0) from stop
    done = int(net.optimizer.iterations.numpy())
    validation = net.evaluate(val_ds, verbose=0, return_dict=True)
    validation = {k: float(v) for k, v in validation.items()}
    if writer is not None:
        with writer.as_default(step=done):
            for name, value in validation.items():
                write_scalar_summary(f"validation/{name}", value, done)
        writer.flush()
    if chief:
        emzoo.save(net, output, name=output.name,
                   metadata=_final_metadata(net, config, command, done, validation, start), overwrite=True)
    else:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    seconds = time.time() - started
    if verbose and chief:
        scores = ", ".join(f"{k} {v:.4g}" for k, v in validation.items())
        print(f"emzoo: {done} steps done in {seconds:.0f} s; validation: {scores}; "
              f"saved to {output} (emzoo.load({str(output)!r}))", file=sys.stderr)
    return {"output": str(output), "steps": done, "resumed_from": resumed_from,
            "validation": validation, "seconds": seconds, "replicas": replicas}
