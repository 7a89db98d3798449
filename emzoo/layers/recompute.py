"""Gradient checkpointing for layers that offer a ``remat`` option.

Example:
    >>> import keras, numpy as np
    >>> dense = keras.layers.Dense(2)
    >>> tuple(remat_call(dense, np.ones((1, 3), "float32")).shape)
    (1, 2)
"""

import keras


def remat_call(function, *args):
    """``function(*args)`` whose intermediate results are recomputed in the backward pass.

    ``keras.remat`` around a fresh wrapper on every call: JAX caches checkpoint traces per
    function object, so wrapping the same layer or bound method again would reuse a trace that
    holds the weights of its first call (outputs went stale after ``set_weights``).
    """
    return keras.remat(lambda *inputs: function(*inputs))(*args)
