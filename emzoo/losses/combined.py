"""A weighted sum of emzoo losses with per-term step schedules: the papers' total losses.

:class:`CombinedLoss` is a ``keras.losses.Loss``: ``sum_i weight_i(step) * term_i``, per
sample, then Keras' batch mean. Terms share one :class:`~emzoo.losses.core.LossContext`, so
every VGG extractor runs once per evaluation on the prediction and once on the batched ground
truth and (when a term needs them) input frames. It needs the frames when any term does
(``uses_frames``) and the training step when any weight is a schedule (``uses_step``;
``bind_step(optimizer.iterations)``, done by ``Interpolator.compile``). Unbound, schedules read
step 0 (with a warning).

Example:
    >>> import numpy as np
    >>> from emzoo.losses import CombinedLoss, L1Loss, FeatureReconstructionLoss
    >>> terms = {"pixel": L1Loss(), "feature": FeatureReconstructionLoss(vgg_weights=None)}
    >>> loss = CombinedLoss(terms, weights={"pixel": 1.0, "feature": 0.5})
    >>> values = loss.term_values(np.zeros((1, 32, 32, 1)), np.ones((1, 32, 32, 1)))
    >>> sorted(values)
    ['feature', 'pixel', 'total']
"""

import warnings

import keras
from keras import ops

from emzoo.errors import EmzooError, describe
from emzoo.losses.core import LossContext, TermLoss
from emzoo.losses.schedules import PiecewiseConstant


@keras.saving.register_keras_serializable(package="emzoo")
class CombinedLoss(TermLoss):
    """``sum_i weight_i(step) * term_i`` over named :class:`TermLoss` terms.

    Args:
        terms: ``{name: TermLoss}`` (order kept).
        weights: ``{name: float | PiecewiseConstant}``; missing names weigh 1.
    """

    def __init__(self, terms, weights=None, name="paper_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not terms:
            raise EmzooError(describe("A CombinedLoss needs at least one term.",
                                      "a dict {name: loss}", terms=terms))
        self.terms = dict(terms)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.terms))
        if unknown:
            raise EmzooError(describe("Weights given for terms that do not exist.",
                                      "names among " + ", ".join(self.terms), unknown=unknown))
        self.weights = {}
        for term_name, term in self.terms.items():
            if not isinstance(term, TermLoss):
                raise EmzooError(describe(f"The term `{term_name}` is not an emzoo loss.",
                                          "an emzoo.losses TermLoss (L1Loss, StyleBalanceLoss, ...)",
                                          term=type(term).__name__))
            weight = weights.get(term_name, 1.0)
            if isinstance(weight, dict):
                weight = PiecewiseConstant(**weight)
            self.weights[term_name] = weight if isinstance(weight, PiecewiseConstant) else float(weight)
        self._step = None
        self._warned_unbound = False

    # --------------------------------------------------------------------- frames and steps
    @property
    def uses_frames(self):
        return any(term.uses_frames for term in self.terms.values())

    @property
    def uses_step(self):
        return any(isinstance(w, PiecewiseConstant) for w in self.weights.values())

    def bind_step(self, iterations):
        """Reads schedule weights at ``iterations`` (the optimizer's counter; a Keras variable)."""
        self._step = iterations

    def weight_of(self, term_name):
        """The weight of a term now: a float, or a scalar tensor for a schedule."""
        weight = self.weights[term_name]
        if not isinstance(weight, PiecewiseConstant):
            return weight
        if self._step is None:
            if not self._warned_unbound:
                warnings.warn(f"{self.name}: the weight schedules are not bound to a training step "
                              "(use an emzoo Interpolator's compile(), or loss.bind_step("
                              "optimizer.iterations)); using the step-0 weights.", stacklevel=3)
                self._warned_unbound = True
            return weight(0)
        return weight(self._step)

    # ----------------------------------------------------------------------------- values
    def feature_requests(self):
        requests = []
        for term in self.terms.values():
            requests += term.feature_requests()
        return requests

    def weighted_terms(self, ctx):
        """``{name: weight * term}`` per sample ``(B,)`` (every request announced first)."""
        for extractor, roles in self.feature_requests():
            ctx.request(extractor, roles)
        return {term_name: term.per_sample(ctx) * self.weight_of(term_name)
                for term_name, term in self.terms.items()}

    def per_sample(self, ctx):
        total = 0.0
        for value in self.weighted_terms(ctx).values():
            total = total + value
        return total

    def term_values(self, y_true, y_pred, x=None):
        """``{name: weighted batch mean, ..., "total": ...}`` for logging or inspection.

        Example:
            >>> loss.term_values(y, model(x)["image"], x)     # doctest: +SKIP
            {'l1': <tf.Tensor ...>, 'film_vgg': ..., 'film_style': ..., 'total': ...}
        """
        y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        frames = None
        if isinstance(x, dict) and "x0" in x and "x1" in x:
            frames = {k: ops.cast(ops.convert_to_tensor(x[k]), "float32") for k in ("x0", "x1")}
        elif self.uses_frames:
            raise EmzooError(describe("These losses need the input frames.", "x={'x0', 'x1', ...}",
                                      x=type(x).__name__))
        values = {k: ops.mean(v) for k, v in self.weighted_terms(
            LossContext(y_true, y_pred, frames)).items()}
        values["total"] = sum(values.values())
        return values

    # ---------------------------------------------------------------------- serialisation
    def get_config(self):
        return {**super().get_config(),
                "terms": {k: keras.saving.serialize_keras_object(v) for k, v in self.terms.items()},
                "weights": {k: (w.get_config() if isinstance(w, PiecewiseConstant) else w)
                            for k, w in self.weights.items()}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["terms"] = {k: keras.saving.deserialize_keras_object(v)
                           for k, v in config["terms"].items()}
        return cls(**config)

    def __repr__(self):
        parts = ", ".join(f"{w!r} * {t.name}" for t, w in zip(self.terms.values(),
                                                             self.weights.values()))
        return f"CombinedLoss({parts})"
