"""Convolutional blocks shared by the EM-native architectures (TSAIN, SSAN, DAN).

* :class:`ResidualBlock`: conv-ReLU-conv plus identity, no batch norm (EDSR / EDVR
  ``ResidualBlock_noBN``); TSAIN's feature extractor and reconstruction trunk, and, with a ReLU
  after the sum and no biases, DAIN's ``BasicBlock`` used in SSAN's refinement head.
* :class:`ResidualDenseBlock`: the RDB of RDN (Zhang et al., CVPR 2018): ``num_layers`` 3x3
  conv-ReLU layers each adding ``growth_rate`` channels by concatenation, local feature fusion
  (1x1 conv back to the input width) and a local residual.
* :class:`ResidualDenseNetwork`: RDN without its upsampler, as SSAN/DAN's siamese encoder:
  two shallow 3x3 convs, ``num_blocks`` RDBs, global feature fusion (concat, 1x1, 3x3) and a
  global residual to the first shallow feature.

All tensors are NHWC; the layers use ``keras.ops`` only (TensorFlow and JAX backends) and build
their sub-layers in ``build()`` so weights exist only once the input width is known.
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, check_integer, describe
from emzoo.layers.recompute import remat_call


def _conv(filters, kernel_size, name, use_bias=True, activation=None):
    return keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias,
                               activation=activation, name=name)


@keras.saving.register_keras_serializable(package="emzoo")
class ResidualBlock(keras.layers.Layer):
    """``x + conv(relu(conv(x)))`` with no batch norm (optionally followed by a ReLU).

    Args:
        filters: width of both convs; ``None`` uses the input width. The identity path needs
            ``filters`` equal to the input width (checked at build).
        kernel_size: size of both (square) convs.
        use_bias: whether the convs have biases (EDVR: yes; DAIN's BasicBlock: no).
        relu_after_sum: apply a ReLU to the sum (DAIN's BasicBlock) instead of returning it
            unchanged (EDSR/EDVR).

    Example:
        >>> block = ResidualBlock(64)
        >>> tuple(block(keras.ops.zeros((1, 8, 8, 64))).shape)
        (1, 8, 8, 64)
    """

    def __init__(self, filters=None, kernel_size=3, use_bias=True, relu_after_sum=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = None if filters is None else check_integer("filters", filters)
        self.kernel_size = check_integer("kernel_size", kernel_size)
        self.use_bias = bool(use_bias)
        self.relu_after_sum = bool(relu_after_sum)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if self.filters is not None and self.filters != channels:
            raise EmzooError(describe(
                f"ResidualBlock `{self.name}` adds its input to its output, so `filters` must "
                "equal the input width.", f"filters={channels} or None",
                filters=self.filters, input_shape=tuple(input_shape)))
        width = self.filters or channels
        self.conv1 = _conv(width, self.kernel_size, "conv1", self.use_bias, activation="relu")
        self.conv2 = _conv(width, self.kernel_size, "conv2", self.use_bias)
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (width,))
        super().build(input_shape)

    def call(self, x):
        out = x + self.conv2(self.conv1(x))
        return ops.relu(out) if self.relu_after_sum else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, use_bias=self.use_bias,
                      relu_after_sum=self.relu_after_sum)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class ResidualDenseBlock(keras.layers.Layer):
    """Residual dense block (RDB): densely connected conv-ReLU layers, 1x1 fusion, local residual.

    Layer ``i`` (0-based) sees the input concatenated with the outputs of layers ``0..i-1``
    (``G0 + i * growth_rate`` channels) and adds ``growth_rate`` channels; the 1x1 local feature
    fusion maps ``G0 + num_layers * growth_rate`` channels back to the input width ``G0``, and the
    input is added back.

    Args:
        growth_rate: channels each inner layer adds (RDN's G).
        num_layers: inner conv layers (RDN's C).
        kernel_size: size of the inner convs (RDN: 3).

    Example:
        >>> rdb = ResidualDenseBlock(growth_rate=16, num_layers=4)
        >>> tuple(rdb(keras.ops.zeros((1, 8, 8, 32))).shape)
        (1, 8, 8, 32)
    """

    def __init__(self, growth_rate=32, num_layers=6, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.growth_rate = check_integer("growth_rate", growth_rate)
        self.num_layers = check_integer("num_layers", num_layers)
        self.kernel_size = check_integer("kernel_size", kernel_size)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        spatial = tuple(input_shape[:-1])
        self.dense_convs = []
        for i in range(self.num_layers):
            conv = _conv(self.growth_rate, self.kernel_size, f"dense_conv{i}", activation="relu")
            conv.build(spatial + (channels + i * self.growth_rate,))
            self.dense_convs.append(conv)
        self.local_fusion = _conv(channels, 1, "local_fusion")
        self.local_fusion.build(spatial + (channels + self.num_layers * self.growth_rate,))
        super().build(input_shape)

    def call(self, x):
        features = x
        for conv in self.dense_convs:
            features = ops.concatenate([features, conv(features)], axis=-1)
        return x + self.local_fusion(features)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(growth_rate=self.growth_rate, num_layers=self.num_layers,
                      kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class ResidualDenseNetwork(keras.layers.Layer):
    """RDN feature extractor (no upsampler): shallow convs, RDBs, global fusion, global residual.

    ``F_-1 = conv3x3(x)`` (``features`` channels), ``F_0 = conv3x3(F_-1)``,
    ``F_d = RDB_d(F_{d-1})`` for d = 1..``num_blocks``, then
    ``out = conv3x3(conv1x1(concat(F_1..F_D))) + F_-1``. The output has ``features`` channels
    and the input's spatial size.

    Args:
        num_blocks: number of RDBs (RDN's D; config A: 20, B: 16).
        layers_per_block: inner layers per RDB (RDN's C; A: 6, B: 8).
        growth_rate: channels per inner layer (RDN's G; A: 32, B: 64).
        features: width of the shallow, fused and output features (RDN's G0 = 64).
        kernel_size: size of the 3x3 convs.
        remat: recompute each RDB's inner activations in the backward pass instead of keeping
            them (``keras.remat``; same outputs and gradients). Training memory then holds one
            block's activations plus the ``features``-wide block outputs instead of every block's
            ``features + layers_per_block * growth_rate`` dense concatenations (measurements in
            benchmarks/README.md), for one extra forward pass of the blocks per step. No effect
            on inference.

    Example:
        >>> rdn = ResidualDenseNetwork(num_blocks=2, layers_per_block=2, growth_rate=8, features=16)
        >>> tuple(rdn(keras.ops.zeros((1, 8, 8, 1))).shape)
        (1, 8, 8, 16)
    """

    def __init__(self, num_blocks=16, layers_per_block=8, growth_rate=64, features=64,
                 kernel_size=3, remat=False, **kwargs):
        super().__init__(**kwargs)
        self.remat = bool(remat)
        self.num_blocks = check_integer("num_blocks", num_blocks)
        self.layers_per_block = check_integer("layers_per_block", layers_per_block)
        self.growth_rate = check_integer("growth_rate", growth_rate)
        self.features = check_integer("features", features)
        self.kernel_size = check_integer("kernel_size", kernel_size)

    def build(self, input_shape):
        spatial = tuple(input_shape[:-1])
        feature_shape = spatial + (self.features,)
        self.shallow1 = _conv(self.features, self.kernel_size, "shallow1")
        self.shallow1.build(input_shape)
        self.shallow2 = _conv(self.features, self.kernel_size, "shallow2")
        self.shallow2.build(feature_shape)
        self.dense_blocks = []
        for d in range(self.num_blocks):
            block = ResidualDenseBlock(self.growth_rate, self.layers_per_block, self.kernel_size,
                                       name=f"rdb{d}")
            block.build(feature_shape)
            self.dense_blocks.append(block)
        self.global_fusion = _conv(self.features, 1, "global_fusion")
        self.global_fusion.build(spatial + (self.num_blocks * self.features,))
        self.global_conv = _conv(self.features, self.kernel_size, "global_conv")
        self.global_conv.build(feature_shape)
        super().build(input_shape)

    def call(self, x):
        shallow = self.shallow1(x)
        features = self.shallow2(shallow)
        block_outputs = []
        for block in self.dense_blocks:
            features = remat_call(block, features) if self.remat else block(features)
            block_outputs.append(features)
        fused = self.global_conv(self.global_fusion(ops.concatenate(block_outputs, axis=-1)))
        return fused + shallow

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.features,)

    def get_config(self):
        config = super().get_config()
        config.update(num_blocks=self.num_blocks, layers_per_block=self.layers_per_block,
                      growth_rate=self.growth_rate, features=self.features,
                      kernel_size=self.kernel_size, remat=self.remat)
        return config
