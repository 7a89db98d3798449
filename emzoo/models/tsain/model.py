"""TSAIN: Temporal Spatial-Adaptive Interpolation with deformable refinement (EM slice interpolation).

Wang, Zejin et al., "Temporal Spatial-Adaptive Interpolation with Deformable Refinement for
Electron Microscopic Images" (arXiv 2101.06771, first released as TSADR). The layout follows the
paper and the authors' public parameter-counting copy of the network (``zejinwang/TSADR @ 319fbf8 :
modules/Count.py : PCDNet``; see ``shared/specs/em_networks.md`` §1.2):

1. **Feature extraction**, shared by both frames: 3x3 conv + LeakyReLU(0.1), ``extraction_blocks``
   (the paper's k1 = 5) residual blocks, then a feature pyramid: each coarser level is a stride-2
   3x3 conv and a 3x3 conv, LeakyReLU(0.1) after each (levels L1 = H, L2 = H/2, L3 = H/4).
2. **Temporal interpolation**: a bidirectional Pyramid-Cascading-Deformable (PCD) alignment without
   the cascading stage (the Zooming-Slow-Mo variant). Direction 0 deforms ``F0`` with offsets
   predicted from ``[F0, F2]``, direction 2 deforms ``F2`` with offsets from ``[F2, F0]``; the two
   directions have separate weights. Each level predicts offset features from the concatenated
   features; at L2 and L1 the coarser offset features are upsampled x2 (bilinear, half-pixel
   centres) **and doubled** (a displacement of one coarse pixel is two fine pixels) before they are
   mixed in. Modulated deformable convs (DCNv2) with ``deformable_groups`` = 8 groups.
3. **Fusion** of the two interpolated features by a 1x1 conv (paper eq. 4).
4. ``spatial_adaptive_blocks`` = 3 cascaded residual spatial-adaptive blocks (RSAB, eq. 7):
   ``x + conv(lrelu(DConv(x, offsets(x))))``; the authors' code uses ONE deformable group here
   (``rsab_deformable_groups``) and LeakyReLU(0.2).
5. ``refinement_blocks`` = 3 stacked deformable refinement blocks (DRB, eqs. 8-12): each re-aligns
   ``F0`` and ``F2`` to the interpolated feature ``F1`` with its own deformable conv (offsets from
   ``[F_side, F1]``); ``F1`` passes unchanged. No recurrence: "feedback" is the stacking.
6. **Reconstruction**: ``[F0', F1, F2']`` -> 1x1 conv -> 3x3 conv (LeakyReLU(0.2) after each) ->
   ``reconstruction_blocks`` residual blocks -> 3x3 conv to ``channels``. No output activation and
   no global skip, as in the authors' code.

**k2 (reconstruction_blocks).** The paper's text says k2 = 40 (inherited from the Zooming-Slow-Mo
config), but its Table 1 reports 5.71 M parameters, which is what the authors' code gives with
``back_RBs = 10``. The default here is therefore 10: with ``channels=3`` (the authors replicated grey
levels to RGB) the model has exactly **5,664,180** parameters, the authors' 5,713,716 minus the
49,536 of the 1x1 convs their ``Easy_Deformable`` builds but never calls (not built here). With the
EM-native default ``channels=1`` it has 5,661,874 (the first and last convs shrink). Pass
``reconstruction_blocks=40`` for the text's configuration (7,879,860 parameters with 3 channels).

**Time.** TSAIN is trained on midpoints only: ``time`` is accepted (the interpolator contract) but
ignored, and the output is always the middle slice; more frames come from recursion.

**Any H, W.** The pyramid needs H and W divisible by ``size_multiple`` = 2 ** (pyramid_levels - 1)
(4 for the paper's 3 levels). ``call`` pads the inputs up to that multiple (centred, mirrored
borders) and crops the output back, so every input size works; the engines may still pad.

**Initialisation.** Plain and deformable convs use U(-1/sqrt(fan_in), 1/sqrt(fan_in)) kernels (PyTorch's
default, and the authors' DCN initialisation) and zero biases; the offset/mask conv of each
deformable conv is zero-initialised (:class:`emzoo.layers.deformable.DeformableConvPack`), so
training starts from plain convs with masks 0.5. The residual blocks keep the initialisers of
:class:`emzoo.layers.blocks.ResidualBlock`.

Example:
    >>> import emzoo
    >>> model = emzoo.load("tsain", weights=None, compile=False)
    >>> model.count_params()
    5661874
    >>> x = keras.ops.zeros((1, 30, 30, 1))
    >>> tuple(model({"x0": x, "x1": x, "time": keras.ops.full((1, 1), 0.5)})["image"].shape)
    (1, 30, 30, 1)
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, check_integer, describe
from emzoo.layers.blocks import ResidualBlock
from emzoo.layers.deformable import DeformableConv2D, DeformableConvPack
from emzoo.layers.pyramid import upsample2x_bilinear
from emzoo.models.base import Interpolator, crop_padding, float32_outputs, pad_to_multiple
from emzoo.models.tsain.loss import paper_loss


def _torch_default_kernel():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default conv initialisation."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")


def _conv(filters, kernel_size, name, strides=1, padding="same", dtype=None):
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                               kernel_initializer=_torch_default_kernel(), name=name, dtype=dtype)


def _deformable(filters, groups, name):
    return DeformableConvPack(filters, 3, deformable_groups=groups,
                              kernel_initializer=_torch_default_kernel(), name=name)


def _lrelu(x, slope):
    return ops.leaky_relu(x, negative_slope=slope)


@keras.saving.register_keras_serializable(package="emzoo")
class FeaturePyramidExtractor(keras.layers.Layer):
    """Shared TSAIN/EDVR feature extractor: conv, residual blocks, then a feature pyramid.

    Returns a list of ``levels`` feature maps, finest first (``H``, ``H/2``, ...), each with
    ``filters`` channels. The stride-2 convs pad one pixel on every side (PyTorch ``padding=1``)
    rather than Keras' asymmetric "same", so ported weights see the same sampling grid.

    Example:
        >>> pyramid = FeaturePyramidExtractor(filters=8, num_blocks=1, levels=3)
        >>> [tuple(f.shape) for f in pyramid(keras.ops.zeros((1, 16, 16, 1)))]
        [(1, 16, 16, 8), (1, 8, 8, 8), (1, 4, 4, 8)]
    """

    def __init__(self, filters=64, num_blocks=5, levels=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_integer("filters", filters)
        self.num_blocks = check_integer("num_blocks", num_blocks, minimum=0)
        self.levels = check_integer("levels", levels)
        self.conv_first = _conv(self.filters, 3, "conv_first")
        self.blocks = [ResidualBlock(self.filters, name=f"block{i}") for i in range(self.num_blocks)]
        self.down_convs = [_conv(self.filters, 3, f"l{i + 2}_down", strides=2, padding="valid")
                           for i in range(self.levels - 1)]
        self.level_convs = [_conv(self.filters, 3, f"l{i + 2}_conv") for i in range(self.levels - 1)]

    def call(self, x):
        features = _lrelu(self.conv_first(x), 0.1)
        for block in self.blocks:
            features = block(features)
        pyramid = [features]
        for down, conv in zip(self.down_convs, self.level_convs):
            padded = ops.pad(pyramid[-1], [[0, 0], [1, 1], [1, 1], [0, 0]])
            pyramid.append(_lrelu(conv(_lrelu(down(padded), 0.1)), 0.1))
        return pyramid

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, num_blocks=self.num_blocks, levels=self.levels)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class PyramidDeformableInterpolation(keras.layers.Layer):
    """One direction of TSAIN's temporal interpolation: PCD alignment without the cascade.

    Called as ``layer(moving_pyramid, fixed_pyramid)`` (lists, finest first) and returns the
    finest-level feature of ``moving`` deformed towards the missing middle slice. Coarsest level:
    ``offset = lrelu(conv(lrelu(conv([m, f]))))``, ``out = lrelu(DConv(m, offset))``. Finer levels:
    ``offset = lrelu(conv([m, f]))`` mixed with ``2 * up(coarser offset)`` by
    ``lrelu(conv(lrelu(conv([offset, 2 * up]))))``, ``out = conv([DConv(m, offset), up(coarser out)])``
    with a LeakyReLU(0.1) on every level but the finest.

    Example:
        >>> pcd = PyramidDeformableInterpolation(filters=8, deformable_groups=2, levels=2)
        >>> p = [keras.ops.zeros((1, 8, 8, 8)), keras.ops.zeros((1, 4, 4, 8))]
        >>> tuple(pcd(p, p).shape)
        (1, 8, 8, 8)
    """

    def __init__(self, filters=64, deformable_groups=8, levels=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_integer("filters", filters)
        self.deformable_groups = check_integer("deformable_groups", deformable_groups)
        self.levels = check_integer("levels", levels)
        f = self.filters
        # Index 0 is the finest level (L1), index levels-1 the coarsest, as in the pyramid lists.
        self.offset_in = [_conv(f, 3, f"l{i + 1}_offset_in") for i in range(self.levels)]
        self.offset_mix = [_conv(f, 3, f"l{i + 1}_offset_mix") for i in range(self.levels - 1)]
        self.offset_out = [_conv(f, 3, f"l{i + 1}_offset_out") for i in range(self.levels)]
        self.deform = [_deformable(f, self.deformable_groups, f"l{i + 1}_dcn")
                       for i in range(self.levels)]
        self.feature_mix = [_conv(f, 3, f"l{i + 1}_feature_mix") for i in range(self.levels - 1)]

    def call(self, moving, fixed):
        coarsest = self.levels - 1
        offset = None
        aligned = None
        for level in range(coarsest, -1, -1):
            offset_in = _lrelu(self.offset_in[level](
                ops.concatenate([moving[level], fixed[level]], axis=-1)), 0.1)
            if level == coarsest:
                offset = offset_in
            else:
                upsampled = upsample2x_bilinear(offset) * 2.0
                offset = _lrelu(self.offset_mix[level](
                    ops.concatenate([offset_in, upsampled], axis=-1)), 0.1)
            offset = _lrelu(self.offset_out[level](offset), 0.1)
            deformed = self.deform[level](moving[level], offset)
            if level == coarsest:
                aligned = _lrelu(deformed, 0.1)
            else:
                mixed = self.feature_mix[level](
                    ops.concatenate([deformed, upsample2x_bilinear(aligned)], axis=-1))
                aligned = mixed if level == 0 else _lrelu(mixed, 0.1)
        return aligned

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, deformable_groups=self.deformable_groups,
                      levels=self.levels)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class ResidualSpatialAdaptiveBlock(keras.layers.Layer):
    """RSAB (TSAIN eq. 7): ``x + conv(lrelu(DConv(x, offsets)))``, offsets from two convs on ``x``.

    LeakyReLU slope 0.2 after both offset convs and after the deformable conv (authors' code).

    Example:
        >>> rsab = ResidualSpatialAdaptiveBlock(filters=8)
        >>> tuple(rsab(keras.ops.zeros((1, 8, 8, 8))).shape)
        (1, 8, 8, 8)
    """

    def __init__(self, filters=64, deformable_groups=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_integer("filters", filters)
        self.deformable_groups = check_integer("deformable_groups", deformable_groups)
        self.offset_conv1 = _conv(self.filters, 3, "offset_conv1")
        self.offset_conv2 = _conv(self.filters, 3, "offset_conv2")
        self.deform = _deformable(self.filters, self.deformable_groups, "dcn")
        self.conv = _conv(self.filters, 3, "conv")

    def call(self, x):
        offset = _lrelu(self.offset_conv2(_lrelu(self.offset_conv1(x), 0.2)), 0.2)
        return x + self.conv(_lrelu(self.deform(x, offset), 0.2))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, deformable_groups=self.deformable_groups)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class DeformableRefinementBlock(keras.layers.Layer):
    """DRB (TSAIN eqs. 8-11): re-aligns both side features to the interpolated middle feature.

    Called as ``layer(side0, middle, side2)``; returns ``(side0', middle, side2')`` with
    ``side' = DConv(side, lrelu(conv(lrelu(conv([side, middle])))))`` (LeakyReLU 0.1, no activation
    after the deformable conv), one offset branch and deformable conv per side.

    Example:
        >>> drb = DeformableRefinementBlock(filters=8, deformable_groups=2)
        >>> f = keras.ops.zeros((1, 8, 8, 8))
        >>> [tuple(t.shape) for t in drb(f, f, f)]
        [(1, 8, 8, 8), (1, 8, 8, 8), (1, 8, 8, 8)]
    """

    def __init__(self, filters=64, deformable_groups=8, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_integer("filters", filters)
        self.deformable_groups = check_integer("deformable_groups", deformable_groups)
        f = self.filters
        self.offset_conv1 = [_conv(f, 3, f"side{s}_offset_conv1") for s in (0, 2)]
        self.offset_conv2 = [_conv(f, 3, f"side{s}_offset_conv2") for s in (0, 2)]
        self.deform = [_deformable(f, self.deformable_groups, f"side{s}_dcn") for s in (0, 2)]

    def _realign(self, index, side, middle):
        offset = _lrelu(self.offset_conv1[index](ops.concatenate([side, middle], axis=-1)), 0.1)
        offset = _lrelu(self.offset_conv2[index](offset), 0.1)
        return self.deform[index](side, offset)

    def call(self, side0, middle, side2):
        return self._realign(0, side0, middle), middle, self._realign(1, side2, middle)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, deformable_groups=self.deformable_groups)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class TSAIN(Interpolator):
    """Temporal spatial-adaptive interpolation network for EM slices (see the module docstring).

    Args:
        filters: feature width everywhere (the paper's and code's nf = 64).
        extraction_blocks: residual blocks of the shared feature extractor (k1 = 5).
        reconstruction_blocks: residual blocks of the reconstruction trunk (k2). Default 10, the
            value that reproduces the published 5.71 M parameters (authors' code); the paper's
            text says 40.
        deformable_groups: deformable groups of the PCD and DRB deformable convs (8).
        spatial_adaptive_blocks: cascaded RSABs (3).
        rsab_deformable_groups: deformable groups inside each RSAB (1 in the authors' code, which
            does not pass its ``groups`` argument to the RSAB's DCN).
        refinement_blocks: stacked DRBs (3).
        pyramid_levels: levels of the feature pyramid and of the PCD alignment (3); sets
            ``size_multiple`` = 2 ** (pyramid_levels - 1).
        channels: image channels, 1 (EM grey levels, default) or 3 (the authors' RGB replication).
        remat: every deformable conv recomputes its gathered corners in the backward pass
            (:class:`~emzoo.layers.deformable.DeformableConv2D`) instead of keeping them: same
            results, less training memory, more time per step (``emzoo train ... --set
            remat=true``; measurements in benchmarks/README.md).
        residual: predict what is added to the mean of the two frames (a zero-initialised last
            conv, so training starts from linear interpolation) instead of the whole image as
            the paper does (default False: the paper's network).

    Example:
        >>> model = TSAIN(filters=16, deformable_groups=2, reconstruction_blocks=1)
        >>> x = keras.ops.zeros((2, 12, 20, 1))
        >>> tuple(model({"x0": x, "x1": x, "time": keras.ops.full((2, 1), 0.5)})["image"].shape)
        (2, 12, 20, 1)
    """

    architecture = "tsain"

    def __init__(self, filters=64, extraction_blocks=5, reconstruction_blocks=10,
                 deformable_groups=8, spatial_adaptive_blocks=3, rsab_deformable_groups=1,
                 refinement_blocks=3, pyramid_levels=3, channels=1, remat=False, residual=False,
                 **kwargs):
        super().__init__(channels=channels, **kwargs)
        self.remat = bool(remat)
        self.residual = bool(residual)
        self.filters = check_integer("filters", filters)
        self.extraction_blocks = check_integer("extraction_blocks", extraction_blocks, 0)
        self.reconstruction_blocks = check_integer("reconstruction_blocks", reconstruction_blocks, 0)
        self.deformable_groups = check_integer("deformable_groups", deformable_groups)
        self.spatial_adaptive_blocks = check_integer("spatial_adaptive_blocks",
                                                     spatial_adaptive_blocks, 0)
        self.rsab_deformable_groups = check_integer("rsab_deformable_groups", rsab_deformable_groups)
        self.refinement_blocks = check_integer("refinement_blocks", refinement_blocks, 0)
        self.pyramid_levels = check_integer("pyramid_levels", pyramid_levels)
        for name in ("deformable_groups", "rsab_deformable_groups"):
            if self.filters % getattr(self, name):
                raise EmzooError(describe(
                    f"Invalid value for argument `{name}`: deformable groups split the "
                    f"{self.filters} feature channels evenly.", "a divisor of `filters`",
                    **{name: getattr(self, name), "filters": self.filters}))
        self.size_multiple = 2 ** (self.pyramid_levels - 1)

        f = self.filters
        self.extractor = FeaturePyramidExtractor(f, self.extraction_blocks, self.pyramid_levels,
                                                 name="extractor")
        self.interpolate_from_x0 = PyramidDeformableInterpolation(
            f, self.deformable_groups, self.pyramid_levels, name="interpolate_from_x0")
        self.interpolate_from_x1 = PyramidDeformableInterpolation(
            f, self.deformable_groups, self.pyramid_levels, name="interpolate_from_x1")
        self.temporal_fusion = _conv(f, 1, "temporal_fusion")
        self.spatial_adaptive = [
            ResidualSpatialAdaptiveBlock(f, self.rsab_deformable_groups, name=f"rsab{i}")
            for i in range(self.spatial_adaptive_blocks)]
        self.refinement = [DeformableRefinementBlock(f, self.deformable_groups, name=f"drb{i}")
                           for i in range(self.refinement_blocks)]
        self.reconstruction_fusion = _conv(f, 1, "reconstruction_fusion")
        self.reconstruction_conv = _conv(f, 3, "reconstruction_conv")
        self.reconstruction = [ResidualBlock(f, name=f"reconstruction_block{i}")
                               for i in range(self.reconstruction_blocks)]
        # The image, or with ``residual`` what is added to the frames' mean (starting at zero, so
        # an untrained residual TSAIN is linear interpolation).
        self.conv_last = (keras.layers.Conv2D(self.channels, 3, padding="same", name="conv_last",
                                              kernel_initializer="zeros", dtype="float32")
                          if self.residual else _conv(self.channels, 3, "conv_last", dtype="float32"))
        for layer in self._flatten_layers(include_self=False):
            if isinstance(layer, DeformableConv2D):
                layer.remat = self.remat

    def call(self, inputs, training=False):
        x0, window = pad_to_multiple(inputs["x0"], self.size_multiple)
        x1, _ = pad_to_multiple(inputs["x1"], self.size_multiple)
        pyramid0 = self.extractor(x0)
        pyramid1 = self.extractor(x1)

        from_x0 = self.interpolate_from_x0(pyramid0, pyramid1)
        from_x1 = self.interpolate_from_x1(pyramid1, pyramid0)
        middle = self.temporal_fusion(ops.concatenate([from_x0, from_x1], axis=-1))
        for block in self.spatial_adaptive:
            middle = block(middle)

        side0, side1 = pyramid0[0], pyramid1[0]
        for block in self.refinement:
            side0, middle, side1 = block(side0, middle, side1)

        features = _lrelu(self.reconstruction_fusion(
            ops.concatenate([side0, middle, side1], axis=-1)), 0.2)
        features = _lrelu(self.reconstruction_conv(features), 0.2)
        for block in self.reconstruction:
            features = block(features)
        image = self.conv_last(features)
        if self.residual:
            image = image + 0.5 * (ops.cast(x0, image.dtype) + ops.cast(x1, image.dtype))
        return float32_outputs({"image": crop_padding(image, window)})

    def paper_loss(self, vgg_weights="default", schedule_scale=1.0):
        """TSAIN's loss (:func:`emzoo.models.tsain.loss.paper_loss`); it has no schedule."""
        del schedule_scale
        return paper_loss(vgg_weights)

    def get_config(self):
        return {
            "filters": self.filters,
            "extraction_blocks": self.extraction_blocks,
            "reconstruction_blocks": self.reconstruction_blocks,
            "deformable_groups": self.deformable_groups,
            "spatial_adaptive_blocks": self.spatial_adaptive_blocks,
            "rsab_deformable_groups": self.rsab_deformable_groups,
            "refinement_blocks": self.refinement_blocks,
            "pyramid_levels": self.pyramid_levels,
            "channels": self.channels,
            "remat": self.remat,
            "residual": self.residual,
        }
