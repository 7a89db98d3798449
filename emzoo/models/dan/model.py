"""DAN, the deformation-aware network: linear blend of the warped frames plus a blend net.

The trunk (siamese RDN, deformation-aware layer, warped frames) is shared with SSAN in
:mod:`emzoo.models.sparse_attention`; this module adds DAN's blend head.
"""

import keras

from emzoo.layers.attention import HierarchicalSparseAttention
from emzoo.layers.blocks import ResidualBlock
from emzoo.models.dan.loss import paper_loss
from emzoo.models.sparse_attention import SparseAttentionInterpolator, conv


@keras.saving.register_keras_serializable(package="emzoo")
class DAN(SparseAttentionInterpolator):
    """Deformation-aware network (DAN): linear blend of the warped frames plus a residual blend net.

    ``image = (1 - t) * warp0 + t * warp1 + rectifier(...)``, the rectifier being DAIN's
    frame-synthesis block as the authors' ``MultipleBasicBlock``: 7x7 conv to ``blend_width``
    (ReLU), 2 residual blocks (no bias, ReLU after the sum), the hierarchical sparse attention
    (when ``blend_attention``), 1 residual block, 3x3 conv to the image channels. Width 128 is
    DAIN's and the only width the authors' block runs at. Outputs ``image``, ``warped0`` and
    ``warped1``. Other arguments: see :class:`SparseAttentionInterpolator`.

    Example:
        >>> model = DAN(rdn_blocks=2, rdn_layers=2, rdn_growth=8, features=16, blend_width=16)
        >>> model.get_config()["blend_width"]
        16
    """

    architecture = "dan"

    def __init__(self, blend_width=128, blend_attention=True, **kwargs):
        super().__init__(**kwargs)
        self.blend_width = int(blend_width)
        self.blend_attention = bool(blend_attention)
        self.blend_in = conv(self.blend_width, 7, "blend_in", activation="relu")
        self.blend_blocks = [ResidualBlock(self.blend_width, use_bias=False, relu_after_sum=True,
                                           name=f"blend_block{i}") for i in range(3)]
        self.blend_attention_layer = (HierarchicalSparseAttention(
            self.outer_partition, self.inner_partition, self.attention_reduction,
            self.scale_scores, adaptive=self.adaptive_partitions,
            name="blend_attention") if self.blend_attention else None)
        # Added to the linear blend; zero at the start, so an untrained DAN is linear interpolation.
        self.blend_out = conv(self.channels, 3, "blend_out", dtype="float32", zero=True)

    def fuse(self, head_input, warped0, warped1, time):
        hidden = self.blend_blocks[1](self.blend_blocks[0](self.blend_in(head_input)))
        if self.blend_attention_layer is not None:
            hidden = self.blend_attention_layer(hidden)
        residual = self.blend_out(self.blend_blocks[2](hidden))
        return {"image": (1.0 - time) * warped0 + time * warped1 + residual}

    def paper_loss(self, vgg_weights="default", schedule_scale=1.0):
        """DAN's loss (:func:`emzoo.models.dan.loss.paper_loss`); it has no schedule."""
        del schedule_scale
        return paper_loss(vgg_weights)

    def get_config(self):
        config = super().get_config()
        config.update(blend_width=self.blend_width, blend_attention=self.blend_attention)
        return config
