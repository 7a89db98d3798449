"""TensorBoard summaries and the callback of a training run.

Scalars (loss, metrics, learning rate, steps per second) use the global optimizer step as their
x axis; images (x0, x1, prediction, target of a fixed validation batch) are written at every
checkpoint. The summary writers work with and without the ``tensorboard`` package (tensorflow-cpu
does not pull it in): the event files are the same.
"""

import time


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
    """``tf.summary.scalar`` that also works without the ``tensorboard`` package installed."""
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


def run_callback(total_steps, manager, writer, image_batch, log_every, verbose, on_checkpoint=None):
    """The Keras callback of one run: stops at ``total_steps``, checkpoints with ``manager`` at
    each epoch end, writes scalars every ``log_every`` steps and images of ``image_batch`` at each
    checkpoint to ``writer`` (None on non-chief workers), shows the progress bar when ``verbose``,
    and calls ``on_checkpoint(step)`` after each checkpoint.
    """
    import keras
    import numpy as np

    class RunCallback(keras.callbacks.Callback):
        """Stops at ``total_steps``, checkpoints each epoch, logs scalars/images, progress."""

        def on_train_begin(self, logs=None):
            from emzoo.engine.progress import Progress

            self.start_step = int(self.model.optimizer.iterations.numpy())
            self.started = time.time()
            # a tqdm bar on a terminal, a plain line every 30 s in a log (Keras's Progbar
            # redraws with carriage returns and ANSI codes wherever it writes)
            self.bar = Progress(total_steps, "train", unit="steps",
                                initial=self.start_step) if verbose else None

        def on_train_end(self, logs=None):
            if self.bar is not None:
                self.bar.close()

        def _step(self):
            return int(self.model.optimizer.iterations.numpy())

        def on_train_batch_end(self, batch, logs=None):
            step = self._step()
            logs = {k: float(v) for k, v in (logs or {}).items()}
            if self.bar is not None:
                self.bar.set_status(" ".join(f"{name} {value:.4g}" for name, value in logs.items()))
                self.bar.update(step - self.bar.done)
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
