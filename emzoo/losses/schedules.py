"""Loss-weight schedules: piecewise constant in the training step (FILM's per-loss weights).

FILM weights each loss with ``PiecewiseConstantDecay(boundaries, values)`` evaluated at the
optimizer's iteration counter: ``values[0]`` while ``step <= boundaries[0]``, ``values[1]`` after,
and so on (film.md 3.1). The Style configuration uses, with ``FILM_STYLE_BOUNDARY = 1.5M``:
VGG ``1.0 -> 0.25`` and style ``0.0 -> 40.0``. Short runs scale the boundaries with
``schedule_scale`` (e.g. ``1e-4`` switches after 150 steps instead of 1.5M).

Example:
    >>> from emzoo.losses.schedules import PiecewiseConstant
    >>> weight = PiecewiseConstant([1_500_000], [0.0, 40.0])
    >>> float(weight(1_500_000)), float(weight(1_500_001))
    (0.0, 40.0)
    >>> weight.scaled(1e-4).boundaries
    [150]
"""

import keras
import numpy as np
from keras import ops

from emzoo.errors import EmzooError, describe

FILM_STYLE_BOUNDARY = 1_500_000


@keras.saving.register_keras_serializable(package="emzoo")
class PiecewiseConstant:
    """``values[i]`` where ``i`` = how many boundaries the step has passed (``step > boundary``).

    Args:
        boundaries: increasing step numbers (ints).
        values: one more value than boundaries.
    """

    def __init__(self, boundaries, values):
        boundaries = [int(b) for b in boundaries]
        values = [float(v) for v in values]
        if len(values) != len(boundaries) + 1 or boundaries != sorted(boundaries):
            raise EmzooError(describe("Invalid piecewise-constant schedule.",
                                      "increasing boundaries and one more value than boundaries",
                                      boundaries=boundaries, values=values))
        self.boundaries = boundaries
        self.values = values

    def __call__(self, step):
        """The weight at ``step`` (a Python int, a tensor or a Keras variable) as a float32 tensor."""
        step = ops.cast(ops.convert_to_tensor(step), "float32")
        passed = ops.zeros((), "int32")
        for boundary in self.boundaries:
            passed = passed + ops.cast(ops.greater(step, float(boundary)), "int32")
        return ops.take(ops.convert_to_tensor(np.asarray(self.values, "float32")), passed)

    def value_at(self, step):
        """The weight at a Python ``step``, as a float (no tensors)."""
        return self.values[sum(step > b for b in self.boundaries)]

    def scaled(self, scale):
        """The same schedule with every boundary multiplied by ``scale`` (rounded, at least 0)."""
        return PiecewiseConstant([max(0, int(round(b * scale))) for b in self.boundaries],
                                 self.values)

    @property
    def is_constant(self):
        return len(set(self.values)) == 1

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"PiecewiseConstant(boundaries={self.boundaries}, values={self.values})"
