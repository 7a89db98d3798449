"""Modulated deformable convolution (DCNv2) in ``keras.ops``, NHWC, stride 1, "same" output size.

Definition (Zhu et al. 2019): ``y(p) = sum_k w_k * x(p + p_k + offset_k(p)) * mask_k(p) + b``, with
``x`` read bilinearly at fractional positions and bilinear corners outside the image counted as 0
(the CUDA ``dmcn_im2col_bilinear`` rule). The input channels are split into ``deformable_groups``
groups; all channels of a group share offsets and masks; the kernel is an ordinary full conv kernel.

Channel layout (the CharlesShang DCNv2 / torchvision / mmcv layout, so weights port directly): for
group ``g`` and kernel tap ``k = i * kernel_w + j`` (row-major),
``offset[..., g*2K + 2k]`` is the row displacement dy, ``offset[..., g*2K + 2k + 1]`` the column
displacement dx, and ``mask[..., g*K + k]`` the modulation in [0, 1].

How it is computed (fast and backend-agnostic): the input is zero-padded by one pixel and
rearranged into rows of ``(b, y, x, group)`` that each hold the pixel's 2x2 neighbourhood; ONE
gather of those rows reads the four bilinear corners of every tap of every group (corners outside
the image land in the zero border or get weight 0), the bilinear weights are fused with the masks
and the validity of the sample, the corners are summed, and ONE matmul with the kernel reshaped
to ``(K * Cin, filters)`` finishes the convolution.
Peak memory is about ``4 * B * H * W * K * Cin`` floats for the gathered corners (training keeps
them for the backward pass); ``DeformableConv2D(remat=True)`` recomputes them in the backward
pass instead (same results; one more gather per training step, no extra inference cost).
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, check_integer, describe
from emzoo.layers.recompute import remat_call


def _pair(name, value):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise EmzooError(describe(f"Invalid value for argument `{name}`.",
                                      "an integer or a tuple of 2 integers", **{name: value}))
        return (check_integer(name, value[0]), check_integer(name, value[1]))
    value = check_integer(name, value)
    return (value, value)


def modulated_deformable_conv(inputs, offset, mask, kernel, bias=None, deformable_groups=1,
                              dilation_rate=(1, 1)):
    """Functional DCNv2: stride 1, "same" padding, NHWC. See the module docstring for layouts.

    Args:
        inputs: ``(B, H, W, Cin)``.
        offset: ``(B, H, W, 2 * G * K)`` with ``K = kh * kw``, (dy, dx) interleaved per tap.
        mask: ``(B, H, W, G * K)``.
        kernel: ``(kh, kw, Cin, filters)``.
        bias: ``(filters,)`` or None.
        deformable_groups: ``G``; must divide ``Cin``.
        dilation_rate: ``(dy, dx)`` dilation of the kernel taps.

    Example:
        >>> import numpy as np
        >>> x = np.random.rand(1, 6, 6, 4).astype("float32")
        >>> w = np.random.rand(3, 3, 4, 2).astype("float32")
        >>> out = modulated_deformable_conv(x, np.zeros((1, 6, 6, 18), "float32"),
        ...                                 np.ones((1, 6, 6, 9), "float32"), w)
        >>> tuple(out.shape)
        (1, 6, 6, 2)
    """
    inputs = ops.convert_to_tensor(inputs)
    dtype = inputs.dtype
    kernel_h, kernel_w, in_channels, filters = (int(d) for d in kernel.shape)
    taps = kernel_h * kernel_w
    groups = int(deformable_groups)
    group_channels = in_channels // groups
    dilation_h, dilation_w = dilation_rate

    shape = ops.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]

    # Pad by one zero pixel on each side (two at the bottom/right for the neighbour stack below):
    # any sample with -1 < y < H and -1 < x < W then finds its four corners inside the padded map,
    # and corners outside the image read zeros.
    padded = ops.pad(inputs, ((0, 0), (1, 2), (1, 2), (0, 0)))
    # Each row of ``quads`` holds the 2x2 neighbourhood (top-left, top-right, bottom-left,
    # bottom-right) of one padded pixel and group, so that one gather of wide rows reads all four
    # bilinear corners (about twice as fast on CPU as gathering four times as many narrow rows).
    quads = ops.stack([padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1],
                       padded[:, 1:, 1:]], axis=3)  # (B, H + 2, W + 2, 4, Cin)
    quads = ops.reshape(quads, (batch, height + 2, width + 2, 4, groups, group_channels))
    quads = ops.reshape(ops.transpose(quads, (0, 1, 2, 4, 3, 5)), (-1, 4 * group_channels))

    # Sample positions (float32 even under mixed precision): base grid + tap + learned offset.
    offset = ops.reshape(ops.cast(offset, "float32"), (batch, height, width, groups, taps, 2))
    tap_rows = [i * dilation_h - (dilation_h * (kernel_h - 1)) // 2 for i in range(kernel_h)]
    tap_cols = [j * dilation_w - (dilation_w * (kernel_w - 1)) // 2 for j in range(kernel_w)]
    tap_y = ops.convert_to_tensor([r for r in tap_rows for _ in tap_cols], dtype="float32")
    tap_x = ops.convert_to_tensor([c for _ in tap_rows for c in tap_cols], dtype="float32")
    rows = ops.arange(0, height, dtype="float32")[None, :, None, None, None]
    cols = ops.arange(0, width, dtype="float32")[None, None, :, None, None]
    y = rows + tap_y + offset[..., 0]  # (B, H, W, G, K)
    x = cols + tap_x + offset[..., 1]

    height_f = ops.cast(height, "float32")
    width_f = ops.cast(width, "float32")
    valid = ops.logical_and(ops.logical_and(y > -1.0, y < height_f),
                            ops.logical_and(x > -1.0, x < width_f))
    y0 = ops.floor(y)
    x0 = ops.floor(x)
    wy = y - y0
    wx = x - x0

    # Rows of the padded map, (b, y, x, g) flattened; invalid samples are clamped anywhere and
    # get weight 0.
    height_i = ops.cast(height, "int32")
    width_i = ops.cast(width, "int32")
    qy = ops.clip(ops.cast(y0, "int32") + 1, 0, height_i)
    qx = ops.clip(ops.cast(x0, "int32") + 1, 0, width_i)
    padded_width = width_i + 2
    batch_base = ops.arange(0, batch, dtype="int32")[:, None, None, None, None] * (height_i + 2)
    group_index = ops.arange(0, groups, dtype="int32")[:, None]
    top_left = ((batch_base + qy) * padded_width + qx) * groups + group_index  # (B, H, W, G, K)
    corners = ops.take(quads, top_left, axis=0)  # (B, H, W, G, K, 4 * Cg): the one gather
    corners = ops.reshape(corners, (batch, height, width, groups, taps, 4, group_channels))

    modulation = ops.cast(mask, "float32")
    modulation = ops.reshape(modulation, (batch, height, width, groups, taps))
    modulation = modulation * ops.cast(valid, "float32")
    weights = ops.stack([(1.0 - wy) * (1.0 - wx), (1.0 - wy) * wx, wy * (1.0 - wx), wy * wx],
                        axis=-1) * modulation[..., None]
    weights = ops.cast(weights, dtype)  # (B, H, W, G, K, 4)
    # An einsum, not ``sum(corners * weights[..., None])``: XLA:CPU (jaxlib 0.10) crashes on the
    # gradient of the broadcast product feeding the gather's scatter when deformable_groups != 2.
    columns = ops.einsum("bhwgkqc,bhwgkq->bhwgkc", corners, weights)  # (B, H, W, G, K, Cg)

    # Kernel rows ordered like the columns: (g, k, c) instead of Keras' (k, g, c).
    kernel = ops.reshape(ops.cast(kernel, dtype), (taps, groups, group_channels, filters))
    kernel = ops.reshape(ops.transpose(kernel, (1, 0, 2, 3)), (taps * in_channels, filters))
    columns = ops.reshape(columns, (-1, taps * in_channels))
    outputs = ops.matmul(columns, kernel)
    if bias is not None:
        outputs = outputs + ops.cast(bias, dtype)
    return ops.reshape(outputs, (batch, height, width, filters))


@keras.saving.register_keras_serializable(package="emzoo")
class DeformableConv2D(keras.layers.Layer):
    """Modulated deformable 2-D convolution (DCNv2), called as ``layer(x, offset, mask)``.

    NHWC, stride 1, "same" output size. ``offset`` is ``(B, H, W, 2*G*K)`` and ``mask``
    ``(B, H, W, G*K)`` with ``K = kh * kw`` and ``G = deformable_groups``; the channel layout is in
    the module docstring. With zero offsets and unit masks it equals ``keras.layers.Conv2D`` with
    the same ``kernel`` (kh, kw, Cin, filters) and ``bias``.

    Args:
        filters: number of output channels.
        kernel_size: int or (kh, kw).
        deformable_groups: groups of input channels sharing offsets and masks; divides Cin.
        dilation_rate: int or (dh, dw).
        use_bias: add a bias.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer: as in Conv2D.
        remat: recompute the gathered corners in the backward pass instead of keeping them
            (``keras.remat``): training memory drops by about ``4 * B * H * W * K * Cin`` floats
            per layer, at the price of one more forward of this layer per step.

    Example:
        >>> import numpy as np
        >>> layer = DeformableConv2D(8, kernel_size=3, deformable_groups=2)
        >>> x = np.random.rand(1, 16, 16, 4).astype("float32")
        >>> offset = np.zeros((1, 16, 16, 2 * 2 * 9), "float32")
        >>> mask = np.ones((1, 16, 16, 2 * 9), "float32")
        >>> tuple(layer(x, offset, mask).shape)
        (1, 16, 16, 8)
    """

    def __init__(self, filters, kernel_size=3, deformable_groups=1, dilation_rate=1, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, remat=False, **kwargs):
        super().__init__(**kwargs)
        self.remat = bool(remat)
        self.filters = check_integer("filters", filters)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.deformable_groups = check_integer("deformable_groups", deformable_groups)
        self.dilation_rate = _pair("dilation_rate", dilation_rate)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    @property
    def taps(self):
        """Number of kernel taps K = kh * kw."""
        return self.kernel_size[0] * self.kernel_size[1]

    def _check_input_channels(self, in_channels):
        if in_channels is None:
            raise EmzooError(describe("Invalid input shape for DeformableConv2D.",
                                      "a known number of input channels", in_channels=in_channels))
        if in_channels % self.deformable_groups:
            raise EmzooError(describe(
                "Invalid value for argument `deformable_groups`.",
                f"a divisor of the number of input channels ({in_channels})",
                deformable_groups=self.deformable_groups))

    def build(self, inputs_shape, offset_shape=None):
        in_channels = inputs_shape[-1]
        self._check_input_channels(in_channels)
        expected = 2 * self.deformable_groups * self.taps
        if offset_shape is not None and offset_shape[-1] not in (None, expected):
            raise EmzooError(describe("Invalid offset shape for DeformableConv2D.",
                                      f"{expected} channels (2 * deformable_groups * kh * kw)",
                                      offset_shape=tuple(offset_shape)))
        self.kernel = self.add_weight(
                name="kernel", shape=(*self.kernel_size, in_channels, self.filters),
                initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer)

    def _convolve(self, inputs, offset, mask):
        return modulated_deformable_conv(inputs, offset, mask, self.kernel, self.bias,
                                         deformable_groups=self.deformable_groups,
                                         dilation_rate=self.dilation_rate)

    def call(self, inputs, offset, mask):
        if self.remat:
            return remat_call(self._convolve, inputs, offset, mask)
        return self._convolve(inputs, offset, mask)

    def compute_output_shape(self, inputs_shape, offset_shape=None):
        return (*tuple(inputs_shape)[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "deformable_groups": self.deformable_groups,
                "dilation_rate": self.dilation_rate,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "remat": self.remat,
        })
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class DeformableConvPack(DeformableConv2D):
    """DCNv2 whose offsets and masks are predicted from a feature map: ``layer(x, feature)``.

    The "pack" form of EDVR/BasicSR (``DCNv2Pack``) and TSAIN/ZSM (``DCN_sep``): a conv with the
    same kernel size and dilation as the deformable conv, named ``conv_offset`` and
    **zero-initialised**, maps ``feature`` to ``3 * G * K`` channels; the first ``2 * G * K`` are the
    offsets (in the layout of :class:`DeformableConv2D`), the last ``G * K`` pass through a sigmoid
    to give the masks. At initialisation the offsets are 0 and the masks 0.5, so the layer starts as
    a plain convolution scaled by one half.

    Example:
        >>> import numpy as np
        >>> layer = DeformableConvPack(8, deformable_groups=2)
        >>> x = np.random.rand(1, 16, 16, 4).astype("float32")
        >>> feature = np.random.rand(1, 16, 16, 6).astype("float32")
        >>> tuple(layer(x, feature).shape)
        (1, 16, 16, 8)
    """

    def __init__(self, filters, kernel_size=3, deformable_groups=8, dilation_rate=1, use_bias=True,
                 **kwargs):
        super().__init__(filters, kernel_size=kernel_size, deformable_groups=deformable_groups,
                         dilation_rate=dilation_rate, use_bias=use_bias, **kwargs)

    def build(self, inputs_shape, feature_shape):
        super().build(inputs_shape)
        self.conv_offset = keras.layers.Conv2D(
                3 * self.deformable_groups * self.taps, self.kernel_size, padding="same",
                dilation_rate=self.dilation_rate, kernel_initializer="zeros",
                bias_initializer="zeros", dtype=self.dtype_policy, name="conv_offset")
        self.conv_offset.build(feature_shape)

    def offsets_and_masks(self, feature):
        """Returns ``(offset, mask)`` predicted from ``feature`` (for inspection and logging)."""
        prediction = self.conv_offset(feature)
        split = 2 * self.deformable_groups * self.taps
        return prediction[..., :split], ops.sigmoid(prediction[..., split:])

    def call(self, inputs, feature):
        offset, mask = self.offsets_and_masks(feature)
        return super().call(inputs, offset, mask)

    def compute_output_shape(self, inputs_shape, feature_shape=None):
        return (*tuple(inputs_shape)[:-1], self.filters)
