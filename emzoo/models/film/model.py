"""FILM (film_net): Frame Interpolation for Large Motion, exactly as Google's film_net.

Reference: Reda et al., "FILM: Frame Interpolation for Large Motion", ECCV 2022; reused for EM
z-upscaling (FILM, FILM-sc-EM, FILM-ft-EM) by the Z-upscaling paper. Facts about the original
code are in ``shared/specs/film.md``; section numbers below refer to it.

Conventions (stated once, as in the original): tensors are NHWC float32; pyramids are Python
lists, **finest level first**; flows have channels ``(dx, dy)`` and live on the grid of the
frame whose features were the first argument of the flow estimator (a "forward" flow F01 lives on
x0's grid and points to where each x0 pixel is found in x1).

The network has three stages:

1. A *cascaded* feature extractor (one shared sub-tree of ``2 * sub_levels`` 3x3 convs applied to
   every level of a 2x2-average-pooled image pyramid; feature level ``i`` concatenates the
   sub-tree outputs of the same resolution started at levels ``i, i-1, ...``).
2. A coarse-to-fine residual flow estimator (own predictors for the ``specialized_levels`` finest
   levels, one shared predictor for the coarser ones), run x0->x1 and x1->x0.
3. Backward warping of the image+feature pyramids of both frames to the middle, then a U-Net
   decoder ("fusion") that turns the warped pyramids and scaled flows into the image.

All activations are LeakyReLU(0.2); resizes of flows are bilinear with half-pixel centres; the
fusion's 2x2 convs pad one row at the bottom and one column at the right (TF ``'same'``); the
output is not clipped and there is no residual connection to the inputs.

Sub-layer names repeat the original's variable names (``feat_net/sub_extractor/cfeat_conv_0``,
``predict_flow/flow_predictor_shared/conv_2``, ``fusion/conv2d_7`` ...), and
:meth:`FILM.original_variables` returns that mapping, which :mod:`emzoo.models.film.saved_model` uses to
load Google's SavedModels.
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, check_integer, describe
from emzoo.layers.pyramid import build_image_pyramid, resize_bilinear, resize_nearest
from emzoo.layers.warp import backward_warp
from emzoo.models.base import Interpolator, float32_outputs
from emzoo.models.film.loss import paper_loss

_SLOPE = 0.2  # LeakyReLU slope used after every activated conv of film_net.


def _conv(filters, kernel_size, name, dtype=None):
    # Keras defaults (glorot-uniform kernel, zero bias) like the original; 'same' padding, which
    # for the 2x2 fusion convs pads one row/column at the bottom/right on every backend.
    return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, dtype=dtype)


def _lrelu(x):
    return ops.leaky_relu(x, negative_slope=_SLOPE)


def _size_of(tensor):
    shape = ops.shape(tensor)
    return (shape[1], shape[2])


@keras.saving.register_keras_serializable(package="emzoo")
class FilmFeatureExtractor(keras.layers.Layer):
    """The cascaded feature extractor ``feat_net`` (spec §1.4): one shared sub-tree.

    The sub-tree (``sub_extractor`` in the original) has ``2 * sub_levels`` 3x3 convs named
    ``cfeat_conv_0 ...`` with ``filters * 2**(j // 2)`` channels. Applied to image level ``i`` with
    depth ``min(levels - i, sub_levels)``, it returns one map per depth ``j`` (2x2 average pooling
    between depths). Feature level ``i`` is the channel concat of the maps of resolution ``i``:
    depth 0 of level ``i`` first, then depth 1 of level ``i - 1``, and so on.

    Example:
        >>> extractor = FilmFeatureExtractor(filters=4, sub_levels=2)
        >>> pyramid = build_image_pyramid(ops.zeros((1, 16, 16, 1)), 3)
        >>> [f.shape[-1] for f in extractor(pyramid)]
        [4, 12, 12]
    """

    def __init__(self, filters=64, sub_levels=4, **kwargs):
        kwargs.setdefault("name", "feat_net")
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.sub_levels = int(sub_levels)
        self.convs = [_conv(self.filters << (j // 2), 3, f"cfeat_conv_{j}")
                      for j in range(2 * self.sub_levels)]

    def _sub_tree(self, image, depth):
        maps = []
        x = image
        for j in range(depth):
            if j > 0:
                x = ops.average_pool(x, 2, strides=2, padding="valid")
            x = _lrelu(self.convs[2 * j](x))
            x = _lrelu(self.convs[2 * j + 1](x))
            maps.append(x)
        return maps

    def call(self, image_pyramid):
        levels = len(image_pyramid)
        sub_trees = [self._sub_tree(image, min(levels - i, self.sub_levels))
                     for i, image in enumerate(image_pyramid)]
        features = []
        for i in range(levels):
            parts = [sub_trees[i - j][j] for j in range(min(i + 1, self.sub_levels))]
            features.append(parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1))
        return features

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "sub_levels": self.sub_levels}


@keras.saving.register_keras_serializable(package="emzoo")
class FilmFlowPredictor(keras.layers.Layer):
    """One flow predictor of ``predict_flow`` (spec §1.5): a residual flow for one level.

    Input: ``concat([features_a, warped_features_b])``. ``num_convs`` 3x3 convs of ``filters``
    channels (``conv_0 ...``), a 1x1 conv of ``filters // 2`` channels, all with LeakyReLU, then a
    1x1 conv to the 2 flow channels (dx, dy) without activation.

    Example:
        >>> predictor = FilmFlowPredictor(num_convs=1, filters=8, name="flow_predictor_0")
        >>> tuple(predictor(ops.zeros((1, 4, 4, 6)), ops.zeros((1, 4, 4, 6))).shape)
        (1, 4, 4, 2)
    """

    def __init__(self, num_convs=3, filters=32, **kwargs):
        super().__init__(**kwargs)
        self.num_convs = int(num_convs)
        self.filters = int(filters)
        self.convs = [_conv(self.filters, 3, f"conv_{i}") for i in range(self.num_convs)]
        self.convs.append(_conv(self.filters // 2, 1, f"conv_{self.num_convs}"))
        self.convs.append(_conv(2, 1, f"conv_{self.num_convs + 1}"))

    def call(self, features_a, features_b):
        dtype = self.compute_dtype
        x = ops.concatenate([ops.cast(features_a, dtype), ops.cast(features_b, dtype)], axis=-1)
        for conv in self.convs[:-1]:
            x = _lrelu(conv(x))
        return self.convs[-1](x)

    def get_config(self):
        return {**super().get_config(), "num_convs": self.num_convs, "filters": self.filters}


@keras.saving.register_keras_serializable(package="emzoo")
class FilmFusion(keras.layers.Layer):
    """The U-Net decoder ``fusion`` (spec §1.9) from the aligned pyramid to the image.

    Per level ``i`` of ``levels - 1`` (finest first) three convs are created in the original's
    order and named like its auto-named Keras layers (``conv2d``, ``conv2d_1``, ...): a 2x2 conv
    without activation, then two 3x3 convs with LeakyReLU; width ``filters * 2**min(i,
    specialized_levels)``. A final 1x1 conv (``conv2d_{3 * (levels - 1)}``) gives ``channels``.

    Example:
        >>> fusion = FilmFusion(levels=2, filters=4, specialized_levels=1, channels=1)
        >>> tuple(fusion([ops.zeros((1, 8, 8, 5)), ops.zeros((1, 4, 4, 9))]).shape)
        (1, 8, 8, 1)
    """

    def __init__(self, levels=5, filters=64, specialized_levels=3, channels=3, **kwargs):
        kwargs.setdefault("name", "fusion")
        super().__init__(**kwargs)
        self.levels = int(levels)
        self.filters = int(filters)
        self.specialized_levels = int(specialized_levels)
        self.channels = int(channels)
        self.convs = []
        for i in range(self.levels - 1):
            width = self.filters << min(i, self.specialized_levels)
            for kernel in (2, 3, 3):
                self.convs.append(_conv(width, kernel, self._conv_name(len(self.convs))))
        self.convs.append(_conv(self.channels, 1, self._conv_name(len(self.convs)),
                                dtype="float32"))  # the image: float32 under mixed precision

    @staticmethod
    def _conv_name(index):
        return "conv2d" if index == 0 else f"conv2d_{index}"

    def call(self, aligned_pyramid):
        if len(aligned_pyramid) != self.levels:
            raise EmzooError(describe("FILM fusion got a pyramid of the wrong length.",
                                      f"{self.levels} levels", levels=len(aligned_pyramid)))
        aligned_pyramid = [ops.cast(level, self.compute_dtype) for level in aligned_pyramid]
        net = aligned_pyramid[-1]
        for i in reversed(range(self.levels - 1)):
            # Nearest resize with half-pixel centres (pixel replication for exact 2x).
            net = resize_nearest(net, _size_of(aligned_pyramid[i]))
            net = self.convs[3 * i](net)
            net = ops.concatenate([aligned_pyramid[i], net], axis=-1)
            net = _lrelu(self.convs[3 * i + 1](net))
            net = _lrelu(self.convs[3 * i + 2](net))
        return self.convs[-1](net)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels, "filters": self.filters,
                "specialized_levels": self.specialized_levels, "channels": self.channels}


@keras.saving.register_keras_serializable(package="emzoo")
class FILM(Interpolator):
    """film_net (FILM, ECCV 2022) with every hyper-parameter of the original as an argument.

    Defaults are the released Style / L1 / VGG configuration (34,436,667 parameters), so the
    weights of Google's SavedModels load by name (see :mod:`emzoo.models.film.saved_model`).

    Args:
        pyramid_levels: levels of the image, feature and flow pyramids (7).
        fusion_pyramid_levels: finest levels that are warped and fused (5).
        specialized_levels: finest levels with their own flow predictor (3); coarser levels share
            one predictor.
        sub_levels: depth of the cascaded feature sub-tree (4).
        filters: base width of features and fusion (64); doubles per sub-tree depth.
        flow_convs: number of 3x3 convs per flow predictor, one entry per specialised level,
            the last entry for the shared predictor ([3, 3, 3, 3]).
        flow_filters: width of those convs, same indexing ([32, 64, 128, 256]).
        channels: 3 (RGB, like the original weights) or 1 (grey levels).
        aux_outputs: also return ``x0_warped``, ``x1_warped`` and the flow pyramids
            (``forward_flow_pyramid``, ``backward_flow_pyramid``, ``forward_residual_flow_pyramid``,
            ``backward_residual_flow_pyramid``), as the original's ``use_aux_outputs``.
        use_time: ``False`` (default) ignores ``time`` and always interpolates the midpoint, like
            the original (its released weights were trained at t = 0.5 only). ``True`` scales the
            flows by ``t`` and ``1 - t`` as in the paper's formulation; this needs a model trained
            on several ``t`` to mean anything.
        residual: not in the original (``False`` keeps film_net exact). ``True`` adds the fusion's
            output to the mean of the two warped input frames, and starts the fusion's last conv
            and each flow predictor's last conv at zero, so an untrained model is exactly linear
            interpolation and training only has to learn the correction. Compact EM models
            trained from scratch on a small budget (the bundled ``default``) use it.

    Size: ``size_multiple = 2**(pyramid_levels - 1)`` (64). The model itself does not pad (to keep
    the original behaviour); the engines pad to ``size_multiple``. Like the original, H and W that
    are not multiples of it still run (pyramid levels floor-halve, flows are resized to each
    level's size), but H or W smaller than ``size_multiple`` raise an :class:`EmzooError`.

    Feature reuse (for volume engines): ``call`` is exactly
    ``interpolate_from_features(extract(x0), extract(x1), time)``. :meth:`extract` computes the
    image and feature pyramids of one frame; a volume engine can compute them once per slice and
    reuse them for the pairs (z-1, z) and (z, z+1) and across recursion levels. Features of
    several frames can be concatenated per level along the batch axis.

    Example:
        >>> model = FILM(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1,
        ...              sub_levels=2, filters=4, flow_convs=[1, 1], flow_filters=[4, 4], channels=1)
        >>> x = ops.zeros((1, 16, 16, 1))
        >>> tuple(model({"x0": x, "x1": x, "time": ops.full((1, 1), 0.5)})["image"].shape)
        (1, 16, 16, 1)
        >>> f0, f1 = model.extract(x), model.extract(x)
        >>> tuple(model.interpolate_from_features(f0, f1, ops.full((1, 1), 0.5))["image"].shape)
        (1, 16, 16, 1)
    """

    architecture = "film"
    weight_formats = ("keras", "film_saved_model")

    def __init__(self, pyramid_levels=7, fusion_pyramid_levels=5, specialized_levels=3,
                 sub_levels=4, filters=64, flow_convs=(3, 3, 3, 3),
                 flow_filters=(32, 64, 128, 256), channels=3, aux_outputs=False, use_time=False,
                 residual=False, **kwargs):
        super().__init__(channels=channels, **kwargs)
        self.pyramid_levels = check_integer("pyramid_levels", pyramid_levels)
        self.fusion_pyramid_levels = check_integer("fusion_pyramid_levels", fusion_pyramid_levels)
        self.specialized_levels = check_integer("specialized_levels", specialized_levels)
        self.sub_levels = check_integer("sub_levels", sub_levels)
        self.filters = check_integer("filters", filters)
        self.flow_convs = [check_integer("flow_convs", n) for n in flow_convs]
        self.flow_filters = [check_integer("flow_filters", n) for n in flow_filters]
        self.aux_outputs = bool(aux_outputs)
        self.use_time = bool(use_time)
        self.residual = bool(residual)
        if self.fusion_pyramid_levels > self.pyramid_levels:
            raise EmzooError(describe(
                "Invalid value for argument `fusion_pyramid_levels`.",
                f"at most pyramid_levels={self.pyramid_levels}",
                fusion_pyramid_levels=fusion_pyramid_levels))
        needed = min(self.specialized_levels, self.pyramid_levels) + (
            1 if self.pyramid_levels > self.specialized_levels else 0)
        if len(self.flow_convs) != len(self.flow_filters) or len(self.flow_convs) < needed:
            raise EmzooError(describe(
                "Invalid values for arguments `flow_convs` and `flow_filters`.",
                f"two lists of the same length, at least {needed} (one per specialised level and "
                "the last for the shared predictor)",
                flow_convs=list(flow_convs), flow_filters=list(flow_filters)))
        self.size_multiple = 2 ** (self.pyramid_levels - 1)

        self.feature_extractor = FilmFeatureExtractor(self.filters, self.sub_levels, name="feat_net")
        self.flow_predictors = [
            FilmFlowPredictor(self.flow_convs[i], self.flow_filters[i], name=f"flow_predictor_{i}")
            for i in range(min(self.specialized_levels, self.pyramid_levels))]
        if self.pyramid_levels > self.specialized_levels:
            self.flow_predictors.append(FilmFlowPredictor(
                self.flow_convs[-1], self.flow_filters[-1], name="flow_predictor_shared"))
        self.fusion = FilmFusion(self.fusion_pyramid_levels, self.filters, self.specialized_levels,
                                 self.channels, name="fusion")
        if self.residual:
            for conv in [self.fusion.convs[-1]] + [p.convs[-1] for p in self.flow_predictors]:
                conv.kernel_initializer = keras.initializers.Zeros()

    # ------------------------------------------------------------------------------- the stages
    def _check_size(self, shape):
        height, width = shape[1], shape[2]
        for name, value in (("height", height), ("width", width)):
            if value is not None and int(value) < self.size_multiple:
                raise EmzooError(describe(
                    f"The input {name} is smaller than FILM's coarsest pyramid level allows.",
                    f"{name} >= {self.size_multiple} (2**(pyramid_levels-1)); engines pad inputs "
                    f"to a multiple of {self.size_multiple}", shape=tuple(shape)))

    def build(self, input_shape):
        # Sub-layers build on the first call; checking the size here turns a too-small input
        # into a clear error before Keras tries to trace the model.
        if isinstance(input_shape, dict) and input_shape.get("x0") is not None:
            self._check_size(tuple(input_shape["x0"]))

    def extract(self, image):
        """Image and feature pyramids of one batch of frames (B, H, W, channels).

        Returns ``{"images": [...], "features": [...]}``, both ``pyramid_levels`` long, finest
        first. Pass two of these to :meth:`interpolate_from_features`.
        """
        self._check_size(tuple(image.shape))
        # Images, flows and warping stay float32 under mixed precision (sub-pixel positions and
        # the residual's grey levels need it); only the convs run in the compute dtype.
        images = build_image_pyramid(ops.cast(image, "float32"), self.pyramid_levels)
        return {"images": images, "features": self.feature_extractor(images)}

    def _predictor(self, level):
        return self.flow_predictors[min(level, len(self.flow_predictors) - 1)]

    def _estimate_flows(self, features_a, features_b):
        """Residual and cumulative flows from a to b (spec §1.5), finest first."""
        levels = len(features_a)
        flow = ops.cast(self._predictor(levels - 1)(features_a[-1], features_b[-1]), "float32")
        residuals = [flow]
        flows = [flow]
        for i in reversed(range(levels - 1)):
            flow = resize_bilinear(2.0 * flow, _size_of(features_a[i]))
            residual = ops.cast(
                self._predictor(i)(features_a[i], backward_warp(features_b[i], flow)), "float32")
            flow = flow + residual
            residuals.insert(0, residual)
            flows.insert(0, flow)
        return residuals, flows

    def interpolate_from_features(self, features0, features1, time=None, training=False):
        """The middle frame (and aux outputs) from two results of :meth:`extract`.

        ``time`` (B, 1) is used only when ``use_time=True``; otherwise t = 0.5.
        """
        del training  # No layer behaves differently in training.
        batch = ops.shape(features0["images"][0])[0]
        # Both flow directions in one batch: a = [f0; f1], b = [f1; f0] -> flows [F01; F10].
        both_a = [ops.concatenate([a, b], axis=0)
                  for a, b in zip(features0["features"], features1["features"])]
        both_b = [ops.concatenate([b, a], axis=0)
                  for a, b in zip(features0["features"], features1["features"])]
        residuals, flows = self._estimate_flows(both_a, both_b)

        if self.use_time and time is not None:
            t = ops.reshape(ops.cast(time, "float32"), (-1, 1, 1, 1))
        else:
            t = ops.full((batch, 1, 1, 1), 0.5, "float32")
        # Frame 0 is warped by t * F10, frame 1 by (1 - t) * F01 (spec §1.7-1.8).
        scale = ops.concatenate([t, 1.0 - t], axis=0)
        aligned = []
        warped_level0 = None
        for i in range(self.fusion_pyramid_levels):
            pyramid = ops.concatenate([
                ops.concatenate([features0["images"][i],
                                 ops.cast(features0["features"][i], "float32")], axis=-1),
                ops.concatenate([features1["images"][i],
                                 ops.cast(features1["features"][i], "float32")], axis=-1)],
                axis=0)
            flow = flows[i]
            swapped = ops.concatenate([flow[batch:], flow[:batch]], axis=0) * scale
            warped = backward_warp(pyramid, swapped)
            if i == 0:
                warped_level0 = warped
            aligned.append(ops.concatenate(
                [warped[:batch], warped[batch:], swapped[:batch], swapped[batch:]], axis=-1))

        image = ops.cast(self.fusion(aligned), "float32")[..., :self.channels]
        if self.residual:
            image = image + 0.5 * (warped_level0[:batch, ..., :self.channels]
                                   + warped_level0[batch:, ..., :self.channels])
        outputs = {"image": image}
        if self.aux_outputs:
            outputs["x0_warped"] = warped_level0[:batch, ..., :self.channels]
            outputs["x1_warped"] = warped_level0[batch:, ..., :self.channels]
            outputs["forward_residual_flow_pyramid"] = [r[:batch] for r in residuals]
            outputs["backward_residual_flow_pyramid"] = [r[batch:] for r in residuals]
            outputs["forward_flow_pyramid"] = [f[:batch] for f in
                                               flows[:self.fusion_pyramid_levels]]
            outputs["backward_flow_pyramid"] = [f[batch:] for f in
                                                flows[:self.fusion_pyramid_levels]]
        return float32_outputs(outputs)

    def call(self, inputs, training=False):
        features0 = self.extract(inputs["x0"])
        features1 = self.extract(inputs["x1"])
        return self.interpolate_from_features(features0, features1, inputs.get("time"),
                                              training=training)

    # ---------------------------------------------------------------------------------- training
    def paper_loss(self, vgg_weights="default", schedule_scale=1.0):
        """FILM's loss of the entry's variant (``metadata.loss_variant``; default ``style``)."""
        return paper_loss(self.loss_variant or "style", vgg_weights, schedule_scale)

    # ------------------------------------------------------------------------- weights by name
    def load_weights_file(self, path, fmt):
        """Reads an original film_net SavedModel (``fmt="film_saved_model"``) by variable name."""
        if fmt == "film_saved_model":
            from emzoo.models.film.saved_model import load_film_saved_model

            return load_film_saved_model(self, path)
        return super().load_weights_file(path, fmt)

    def original_variables(self):
        """``{original film_net variable name: emzoo variable}`` (names without ``:0``).

        The names are those of the original SavedModel (spec §2.3), e.g.
        ``feat_net/sub_extractor/cfeat_conv_0/kernel``, in the original's saved order.
        """
        self.build_for_weights()
        layers = [("feat_net/sub_extractor", conv) for conv in self.feature_extractor.convs]
        for predictor in self.flow_predictors:
            layers += [(f"predict_flow/{predictor.name}", conv) for conv in predictor.convs]
        layers += [("fusion", conv) for conv in self.fusion.convs]
        mapping = {}
        for prefix, conv in layers:
            mapping[f"{prefix}/{conv.name}/kernel"] = conv.kernel
            mapping[f"{prefix}/{conv.name}/bias"] = conv.bias
        return mapping

    def get_config(self):
        return {
            "pyramid_levels": self.pyramid_levels,
            "fusion_pyramid_levels": self.fusion_pyramid_levels,
            "specialized_levels": self.specialized_levels,
            "sub_levels": self.sub_levels,
            "filters": self.filters,
            "flow_convs": list(self.flow_convs),
            "flow_filters": list(self.flow_filters),
            "channels": self.channels,
            "aux_outputs": self.aux_outputs,
            "use_time": self.use_time,
            "residual": self.residual,
        }
