"""SSAN, the sparse self-attention aggregation network: the hybrid network with a sigmoid mask.

Wang et al., BioData Mining 14:10 (2021). The trunk (siamese RDN, attention-aware layer, warped
frames) is shared with DAN in :mod:`emzoo.models.sparse_attention`; this module adds SSAN's fusion
head.
"""

import keras
from keras import ops

from emzoo.layers.blocks import ResidualBlock
from emzoo.models.sparse_attention import SparseAttentionInterpolator, conv
from emzoo.models.ssan.loss import paper_loss


@keras.saving.register_keras_serializable(package="emzoo")
class SSAN(SparseAttentionInterpolator):
    """Sparse self-attention aggregation network (SSAN): hybrid network with a sigmoid mask.

    ``image = m * warp0 + (1 - m) * warp1`` with ``m = sigmoid(hybrid(...))`` (one mask channel,
    shared by all image channels). The hybrid network is a 3x3 conv to ``hybrid_width`` (ReLU),
    ``hybrid_blocks`` residual blocks and a 3x3 conv to 1 channel; the papers give no sizes, so
    the defaults (64, 2) keep it small next to the RDN. Outputs ``image``, ``mask``, ``warped0``
    and ``warped1``. ``time`` is ignored (midpoint model). Other arguments: see
    :class:`SparseAttentionInterpolator`.

    Example:
        >>> model = SSAN(rdn_blocks=2, rdn_layers=2, rdn_growth=8, features=16)
        >>> model.size_multiple
        32
    """

    architecture = "ssan"

    def __init__(self, hybrid_width=64, hybrid_blocks=2, **kwargs):
        super().__init__(**kwargs)
        self.hybrid_width = int(hybrid_width)
        self.hybrid_blocks = int(hybrid_blocks)
        self.hybrid_in = conv(self.hybrid_width, 3, "hybrid_in", activation="relu")
        self.hybrid_trunk = [ResidualBlock(self.hybrid_width, name=f"hybrid_block{i}")
                             for i in range(self.hybrid_blocks)]
        # Blends the frames; zero at the start (mask 0.5), so an untrained SSAN averages them.
        self.hybrid_mask = conv(1, 3, "hybrid_mask", dtype="float32", zero=True)

    def fuse(self, head_input, warped0, warped1, time):
        hidden = self.hybrid_in(head_input)
        for block in self.hybrid_trunk:
            hidden = block(hidden)
        mask = ops.sigmoid(self.hybrid_mask(hidden))
        return {"image": mask * warped0 + (1.0 - mask) * warped1, "mask": mask}

    def paper_loss(self, vgg_weights="default", schedule_scale=1.0):
        """SSAN's loss (:func:`emzoo.models.ssan.loss.paper_loss`); it has no schedule."""
        del schedule_scale
        return paper_loss(vgg_weights)

    def get_config(self):
        config = super().get_config()
        config.update(hybrid_width=self.hybrid_width, hybrid_blocks=self.hybrid_blocks)
        return config
