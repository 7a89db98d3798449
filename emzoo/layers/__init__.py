"""Building blocks shared by the emzoo architectures, written with ``keras.ops`` only.

* :mod:`emzoo.layers.warp`: :func:`backward_warp` (FILM semantics, border clamp).
* :mod:`emzoo.layers.pyramid`: :func:`build_image_pyramid`, :func:`resize_bilinear`, ...
* :mod:`emzoo.layers.deformable`: :class:`DeformableConv2D` (DCNv2) and
  :class:`DeformableConvPack` (offsets and masks predicted from a feature map).
* :mod:`emzoo.layers.attention`: SAGAN self-attention and the interlaced/hierarchical sparse forms.
* :mod:`emzoo.layers.blocks`: residual block, residual dense block and network (RDB, RDN).
* :mod:`emzoo.layers.recompute`: :func:`remat_call`, the gradient checkpointing behind the
  ``remat`` options.

Attention and block layers are imported on first use, so importing this package stays cheap.

Example:
    >>> from emzoo.layers import backward_warp, DeformableConv2D   # doctest: +SKIP
"""

import importlib

from emzoo.layers.deformable import DeformableConv2D, DeformableConvPack
from emzoo.layers.pyramid import (build_image_pyramid, downsample2x_average, resize_bilinear,
                                  resize_nearest, upsample2x, upsample2x_bilinear)
from emzoo.layers.warp import BackwardWarp, backward_warp

_LAZY = {
    "SelfAttention": "emzoo.layers.attention",
    "InterlacedSparseAttention": "emzoo.layers.attention",
    "HierarchicalSparseAttention": "emzoo.layers.attention",
    "ResidualBlock": "emzoo.layers.blocks",
    "ResidualDenseBlock": "emzoo.layers.blocks",
    "ResidualDenseNetwork": "emzoo.layers.blocks",
}


def __getattr__(name):
    """Imports attention and block layers the first time they are asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["BackwardWarp", "DeformableConv2D", "DeformableConvPack", "backward_warp",
           "build_image_pyramid", "downsample2x_average", "resize_bilinear", "resize_nearest",
           "upsample2x", "upsample2x_bilinear", *_LAZY]
