"""What every emzoo loss shares: per-sample terms, the input frames, and VGG features computed once.

Every loss here is a :class:`TermLoss`, a ``keras.losses.Loss`` whose :meth:`TermLoss.per_sample`
returns one value per sample, shape ``(B,)``; Keras reduces it over the batch (mean, and the
``1 / replicas`` scaling under ``tf.distribute``). The images of one evaluation and everything
derived from them live in a :class:`LossContext`: per extractor, the VGG features of the
prediction are computed in one pass and those of the data images (ground truth and, for the
style-balance loss, the input frames) in one batched pass without gradient; all the terms of a
:class:`~emzoo.losses.CombinedLoss` share them, and their Gram matrices. (The ground truth and
frames are treated as data: no gradient flows into them.)

Losses that need the input frames set ``uses_frames = True``; Keras' ``loss(y_true, y_pred)`` cannot
give them the frames, so :class:`~emzoo.models.base.Interpolator` calls
``loss.call_with_frames(x, y_true, y_pred)`` from its ``compute_loss`` (``x`` = the input dict).

Example:
    >>> import numpy as np
    >>> from emzoo.losses.pixel import L1Loss
    >>> float(L1Loss()(np.zeros((2, 4, 4, 1)), np.full((2, 4, 4, 1), 0.5)))
    0.5
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, describe
from emzoo.losses.gram import gram_matrix

FRAME_ROLES = ("x0", "x1")


def reduce_per_sample(values, reduction="sum_over_batch_size"):
    """Reduces ``(B,)`` per-sample values like ``keras.losses.Loss`` does, WITHOUT the division
    by the number of replicas that ``Loss.__call__`` applies under ``tf.distribute``.

    Used by :meth:`TermLoss.call_with_frames`; its caller scales the total for distribution
    (``Interpolator.compute_loss`` does, together with the model's own ``add_loss`` terms).
    """
    if reduction in (None, "none"):
        return values
    if reduction == "sum":
        return ops.sum(values)
    return ops.mean(values)


class LossContext:
    """The images of one loss evaluation and the VGG features / Grams derived from them (cached).

    Args:
        y_true: ground truth ``(B, H, W, C)`` in ``[0, 1]``.
        y_pred: prediction, same shape.
        frames: ``None`` or a dict with the input frames ``"x0"`` and ``"x1"`` (same shape).
    """

    def __init__(self, y_true, y_pred, frames=None):
        self.images = {"true": y_true, "pred": y_pred}
        if frames is not None:
            for role in FRAME_ROLES:
                self.images[role] = frames[role]
        self._requests = {}
        self._features = {}
        self._grams = {}

    @property
    def has_frames(self):
        return all(role in self.images for role in FRAME_ROLES)

    def request(self, extractor, roles):
        """Announces that ``extractor`` features of ``roles`` will be needed (batched together)."""
        entry = self._requests.setdefault(id(extractor), (extractor, []))
        for role in roles:
            if role not in entry[1]:
                entry[1].append(role)

    def features(self, extractor, role):
        """``{layer: (B, h, w, c)}`` of the image ``role`` ("true", "pred", "x0", "x1")."""
        key = (id(extractor), role)
        if key not in self._features:
            self.request(extractor, (role,))
            roles = [r for r in self._requests[id(extractor)][1]
                     if (id(extractor), r) not in self._features]
            for r in roles:
                if r not in self.images:
                    raise EmzooError(describe(f"This loss needs the image `{r}`.",
                                              "the input frames x0 and x1 (call_with_frames)",
                                              available=sorted(self.images)))
            # The prediction runs alone (its backward pass is needed); the data images (truth,
            # frames) run batched together, with no gradient: batching them with the prediction
            # would make the backward pass cover them too (2x the cost for SSAN's four images).
            for group in (["pred"] if "pred" in roles else [],
                          [r for r in roles if r != "pred"]):
                if group:
                    self._run(extractor, group)
        return self._features[key]

    def _run(self, extractor, roles):
        images = [self.images[r] for r in roles]
        batch = images[0] if len(images) == 1 else ops.concatenate(images, axis=0)
        if roles != ["pred"]:
            batch = ops.stop_gradient(batch)
        outputs = extractor(batch)
        if len(roles) == 1:
            self._features[(id(extractor), roles[0])] = outputs
            return
        split = {name: ops.split(value, len(roles), axis=0) for name, value in outputs.items()}
        for i, r in enumerate(roles):
            self._features[(id(extractor), r)] = {name: parts[i] for name, parts in split.items()}

    def grams(self, extractor, role, normalisation, feature_scale=1.0):
        """``{layer: (B, c, c)}`` Gram matrices of ``role``'s features (see ``gram.gram_matrix``)."""
        key = (id(extractor), role, normalisation, feature_scale)
        if key not in self._grams:
            self._grams[key] = {
                name: gram_matrix(value * feature_scale if feature_scale != 1.0 else value,
                                  normalisation)
                for name, value in self.features(extractor, role).items()}
        return self._grams[key]


class TermLoss(keras.losses.Loss):
    """Base of emzoo's losses: ``per_sample(ctx) -> (B,)``; frames on request (see module doc)."""

    uses_frames = False
    uses_step = False

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    # The VGG extractors this term uses, with the image roles it needs from each.
    def feature_requests(self):
        return []

    def per_sample(self, ctx):
        raise NotImplementedError

    def evaluate_per_sample(self, ctx):
        """Announces this term's feature needs to ``ctx`` and returns its ``(B,)`` values."""
        for extractor, roles in self.feature_requests():
            ctx.request(extractor, roles)
        return self.per_sample(ctx)

    def call(self, y_true, y_pred):
        if self.uses_frames:
            raise EmzooError(describe(
                f"The loss `{self.name}` needs the input frames, which `loss(y_true, y_pred)` does "
                "not receive.",
                "an emzoo Interpolator compiled with this loss (its compute_loss calls "
                "`loss.call_with_frames(x, y_true, y_pred)`), or a direct call_with_frames",
                loss=type(self).__name__))
        return self.evaluate_per_sample(LossContext(y_true, y_pred))

    def call_with_frames(self, x, y_true, y_pred):
        """The batch-mean loss given the model's input dict ``x`` (``{"x0", "x1", "time"}``).

        Unlike ``loss(y_true, y_pred)``, the value is not divided by the number of replicas under
        ``tf.distribute``: the caller does that once for its total (``Interpolator.compute_loss``).
        """
        dtype = self.dtype or "float32"
        y_true = ops.cast(ops.convert_to_tensor(y_true), dtype)
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), dtype)
        frames = None
        if isinstance(x, dict) and all(role in x for role in FRAME_ROLES):
            frames = {role: ops.cast(ops.convert_to_tensor(x[role]), dtype) for role in FRAME_ROLES}
        values = self.evaluate_per_sample(LossContext(y_true, y_pred, frames))
        return reduce_per_sample(values, self.reduction)


def mean_per_sample(values):
    """Mean over every axis but the first: ``(B, ...) -> (B,)``."""
    return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)
