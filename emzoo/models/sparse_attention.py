"""What SSAN and DAN share: siamese RDN features, the attention-aware layer, two warped frames.

Both papers (Wang et al.: SSAN, BioData Mining 14:10, 2021; DAN, "a deformation-aware network
for consecutive biomedical image interpolation") describe the same family (spec em_networks.md
§1.4):

1. **Siamese residual dense network.** One RDN (shared weights) computes the forward features
   ``F(t-1 -> t+1)`` and the reverse features ``F(t+1 -> t-1)``. The notation and Fig. 1's
   caption ("the forward and reverse features") say each direction sees both frames, so by
   default the RDN reads the ordered pair ``concat(x0, x1)`` and ``concat(x1, x0)``
   (``siamese_input="pair"``); ``"single"`` feeds each frame alone.
2. **Attention-aware layer** (SSAN's AAL; DAN's "deformation-aware layer"): SSAN's two-level
   hierarchical sparse self-attention (:class:`~emzoo.layers.attention.HierarchicalSparseAttention`,
   R = 8, P' = 4, k = 8, at the RDN width 64, exactly the 1 x 64 x H x W unit of SSAN's Table 2)
   on each direction's features, then a 3x3 conv to image channels added to that direction's
   source frame: the two **warped frames**. The papers do not say how the attended features
   become frames; the residual on the source frame (DAIN's convention for its rectifier) makes the
   untrained model start from the input frames (gamma = 0), which trains faster. The layer is
   shared by both directions (Table 2: 0.0156 M parameters = one hierarchical unit).
3. **Fusion head.**
   * SSAN, the **hybrid network**: a small conv net on ``concat(warp0, warp1, attended features)``
     ends in a sigmoid mask ``m``; ``image = m * warp0 + (1 - m) * warp1`` (the paper's
     "element-wise linear fusion" with a sigmoid weight mask).
   * DAN, the **blend net**: the linear blend ``(1 - t) warp0 + t warp1`` plus a DAIN-style
     residual rectifier (7x7 conv, 2 residual blocks, the hierarchical attention, 1 residual block,
     3x3 conv; width 128), the ``MultipleBasicBlock`` found next to the SSAN blocks in the authors'
     repository (spec §1.4, §2.6).

Both are trained on midpoints: SSAN ignores ``time`` (use 0.5); DAN's blend weights use it, which
at 0.5 is the plain average. Inputs of any size are padded (centred, mirrored) to
``size_multiple`` = R * P' = 32 and cropped back.

RDN size: neither paper nor code gives it; the default is RDN's own published configuration
"A" (D = 20 blocks, C = 6 layers, G = 32, G0 = 64), the lighter of the two standard ones
(config "B" is D = 16, C = 8, G = 64), in line with the papers' claim that the siamese RDN keeps
the parameter count low. All of it is configurable.

Example:
    >>> import emzoo
    >>> model = emzoo.load("ssan", weights=None, compile=False, rdn_blocks=2)   # doctest: +SKIP
    >>> out = model({"x0": x0, "x1": x1, "time": t})["image"]                  # doctest: +SKIP
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, describe
from emzoo.layers.attention import HierarchicalSparseAttention
from emzoo.layers.blocks import ResidualDenseNetwork
from emzoo.models.base import Interpolator
from emzoo.models.base import crop_padding, float32_outputs, pad_to_multiple

_SIAMESE_INPUTS = ("pair", "single")


def conv(filters, kernel_size, name, activation=None, use_bias=True, dtype=None, zero=False):
    """A same-padded conv; ``zero=True`` starts its kernel at zero (an output branch that an
    untrained network leaves out: SSAN and DAN then start as linear interpolation)."""
    initializer = "zeros" if zero else "glorot_uniform"
    return keras.layers.Conv2D(filters, kernel_size, padding="same", activation=activation,
                               use_bias=use_bias, name=name, dtype=dtype,
                               kernel_initializer=initializer)


@keras.saving.register_keras_serializable(package="emzoo")
class AttentionAwareLayer(keras.layers.Layer):
    """Features and their source frame -> (attended features, warped frame).

    ``attended = HierarchicalSparseAttention(features)``;
    ``warped = frame + conv3x3(attended)`` (see the module docstring for why the residual); the
    conv starts at zero, so an untrained layer returns the frame itself.

    Args:
        channels: image channels of the warped frame.
        outer_partition, inner_partition, reduction, scale_scores: of the hierarchical attention.

    Example:
        >>> aal = AttentionAwareLayer(channels=1, outer_partition=2, inner_partition=2)
        >>> attended, warped = aal(keras.ops.zeros((1, 8, 8, 16)), keras.ops.zeros((1, 8, 8, 1)))
        >>> tuple(warped.shape)
        (1, 8, 8, 1)
    """

    def __init__(self, channels=1, outer_partition=8, inner_partition=4, reduction=8,
                 scale_scores=False, adaptive_partitions=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.outer_partition = int(outer_partition)
        self.inner_partition = int(inner_partition)
        self.reduction = int(reduction)
        self.scale_scores = bool(scale_scores)
        self.adaptive_partitions = bool(adaptive_partitions)

    def build(self, features_shape, frame_shape=None):
        self.attention = HierarchicalSparseAttention(self.outer_partition, self.inner_partition,
                                                     self.reduction, self.scale_scores,
                                                     adaptive=self.adaptive_partitions,
                                                     name="attention")
        self.attention.build(features_shape)
        self.to_frame = conv(self.channels, 3, "to_frame", zero=True)
        self.to_frame.build(features_shape)
        super().build(features_shape)

    def call(self, features, frame):
        attended = self.attention(features)
        return attended, frame + self.to_frame(attended)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, outer_partition=self.outer_partition,
                      inner_partition=self.inner_partition, reduction=self.reduction,
                      scale_scores=self.scale_scores, adaptive_partitions=self.adaptive_partitions)
        return config


class SparseAttentionInterpolator(Interpolator):
    """Shared trunk of SSAN and DAN: siamese RDN, attention-aware layer, two warped frames.

    Subclasses implement :meth:`fuse` (the head) and add their own constructor arguments.

    Args:
        rdn_blocks: RDBs in the siamese RDN (D; default 20, RDN config A).
        rdn_layers: conv layers per RDB (C; default 6).
        rdn_growth: growth rate per layer (G; default 32).
        features: RDN feature width G0 = attention width (default 64, SSAN Table 2's 64 channels).
        outer_partition, inner_partition: the hierarchical attention's R and P' (8, 4: the
            authors' ``HierarStruct``); ``size_multiple`` is their product.
        attention_reduction: the attention's query/key channel reduction k (8, authors' code).
        scale_scores: divide attention scores by sqrt(C/2) as the paper's equation does
            (default False: the authors' code has no scaling).
        siamese_input: ``"pair"`` (each direction reads both frames, ordered) or ``"single"``.
        adaptive_partitions: let the attention pick (R, P') per input size (same weights; see
            :class:`~emzoo.layers.attention.HierarchicalSparseAttention`), so large slices cost
            O((HW)^(4/3)) as in SSAN's analysis. Default False (the authors' fixed pair).
        remat: recompute the siamese RDN's blocks in the backward pass (see
            :class:`~emzoo.layers.blocks.ResidualDenseNetwork`): same results, less training
            memory, more time per step (``--set remat=true``; measurements in
            benchmarks/README.md).
        channels: image channels (1 for EM; 3 for RGB-replicated grey as the authors trained).
    """

    def __init__(self, rdn_blocks=20, rdn_layers=6, rdn_growth=32, features=64,
                 outer_partition=8, inner_partition=4, attention_reduction=8, scale_scores=False,
                 siamese_input="pair", adaptive_partitions=False, remat=False, **kwargs):
        super().__init__(**kwargs)
        if siamese_input not in _SIAMESE_INPUTS:
            raise EmzooError(describe("Invalid value for argument `siamese_input`.",
                                      " or ".join(repr(s) for s in _SIAMESE_INPUTS),
                                      siamese_input=siamese_input))
        self.rdn_blocks = int(rdn_blocks)
        self.rdn_layers = int(rdn_layers)
        self.rdn_growth = int(rdn_growth)
        self.features = int(features)
        self.outer_partition = int(outer_partition)
        self.inner_partition = int(inner_partition)
        self.attention_reduction = int(attention_reduction)
        self.scale_scores = bool(scale_scores)
        self.siamese_input = siamese_input
        self.adaptive_partitions = bool(adaptive_partitions)
        self.remat = bool(remat)
        self.size_multiple = self.outer_partition * self.inner_partition
        self.encoder = ResidualDenseNetwork(self.rdn_blocks, self.rdn_layers, self.rdn_growth,
                                            self.features, remat=self.remat, name="siamese_rdn")
        self.attention_aware = AttentionAwareLayer(
            self.channels, self.outer_partition, self.inner_partition, self.attention_reduction,
            self.scale_scores, self.adaptive_partitions, name="attention_aware")

    def min_size(self):
        """Builds at two size multiples so no attention group is a single token."""
        return 2 * self.size_multiple

    def call(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        batch = ops.shape(x0)[0]
        x0, window = pad_to_multiple(x0, self.size_multiple)
        x1, _ = pad_to_multiple(x1, self.size_multiple)
        # Both directions go through the shared (siamese) weights as one batch of 2B.
        frames = ops.concatenate([x0, x1], axis=0)
        if self.siamese_input == "pair":
            encoder_input = ops.concatenate([frames, ops.concatenate([x1, x0], axis=0)], axis=-1)
        else:
            encoder_input = frames
        attended, warped = self.attention_aware(self.encoder(encoder_input), frames)
        head_input = ops.concatenate([warped[:batch], warped[batch:], attended[:batch],
                                      attended[batch:]], axis=-1)
        # The heads blend the warped frames in float32 (mixed precision: convs only are 16-bit).
        warped = ops.cast(warped, "float32")
        warped0, warped1 = warped[:batch], warped[batch:]
        time = ops.reshape(ops.cast(inputs["time"], "float32"), (-1, 1, 1, 1))
        outputs = self.fuse(head_input, warped0, warped1, time)
        outputs.update(warped0=warped0, warped1=warped1)
        return float32_outputs({key: crop_padding(value, window)
                                for key, value in outputs.items()})

    def fuse(self, head_input, warped0, warped1, time):
        """Returns a dict with ``"image"`` (and any extra maps) from the two warped frames."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(rdn_blocks=self.rdn_blocks, rdn_layers=self.rdn_layers,
                      rdn_growth=self.rdn_growth, features=self.features,
                      outer_partition=self.outer_partition, inner_partition=self.inner_partition,
                      attention_reduction=self.attention_reduction,
                      scale_scores=self.scale_scores, siamese_input=self.siamese_input,
                      adaptive_partitions=self.adaptive_partitions, remat=self.remat)
        return config
