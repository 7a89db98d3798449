"""SAGAN self-attention and its sparse (interlaced and hierarchical) forms, as used by SSAN/DAN.

Tensor convention: NHWC. Every attention unit is the SAGAN form of the SSAN authors' code
(``BasicBlock.Self_Attn``; spec em_networks.md §1.4, §2.5)::

    q = conv1x1(x) -> C/k,  key = conv1x1(x) -> C/k,  v = conv1x1(x) -> C   (with biases)
    A = softmax_over_keys(q . key^T)          (no sqrt(d) scaling unless ``scale_scores``)
    y = gamma * (A v) + x                     (scalar gamma initialised to 0)

The sparse forms apply such units to *groups* of positions and chain them, so that every output
position depends on every input position through two (one level) or three (two levels) small
attentions instead of one N x N affinity:

* **lattice groups** at stride P: the pixels sharing the same offset inside the P x P cells
  (``(H/P) * (W/P)`` tokens per group, P*P groups): long-range attention;
* **block groups**: the contiguous P x P cells (P*P tokens per group): short-range attention.

:class:`InterlacedSparseAttention` (Huang et al. 2019, with SAGAN units as SSAN uses it) is
lattice(P) then blocks(P). :class:`HierarchicalSparseAttention` (SSAN's "two-level"
``HierarStruct``) splits the map into R*R stride-R sub-images, runs an interlaced attention with
partition P' on each sub-image (its long range is a stride R*P' lattice of the original map, its
short range a P' x P' lattice at stride R), then runs short-range attention in contiguous R x R
blocks. The authors' code uses R = 8, P' = 4, so H and W must be multiples of 32.

The 1x1 projections are pointwise, so they are computed once on the whole map and only the
projected tensors are regrouped; the result is identical to projecting each group.

Example:
    >>> layer = HierarchicalSparseAttention()          # R = 8, P' = 4, k = 8
    >>> tuple(layer(keras.ops.zeros((1, 64, 64, 16))).shape)
    (1, 64, 64, 16)
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, check_integer, describe


def _check_divisible(layer, shape, multiple, why):
    """Raises an EmzooError when a static H or W is not a multiple of ``multiple``."""
    height, width = shape[1], shape[2]
    bad = [size for size in (height, width) if size is not None and int(size) % multiple]
    if bad:
        padded = " x ".join(str(-(-int(s) // multiple) * multiple) if s is not None else "?"
                            for s in (height, width))
        raise EmzooError(describe(
            f"{type(layer).__name__} `{layer.name}` needs the height and width of its input to be "
            f"multiples of {multiple} ({why}).",
            f"H and W multiples of {multiple} (pad the input, e.g. to {padded})",
            height=height, width=width))


# ------------------------------------------------------------------------------- regrouping
# Each helper maps (B, H, W, C) to (groups, tokens, C) and back. The inverse needs the
# original (B, H, W) which may be dynamic tensors under graph tracing.

def lattice_groups(x, cell):
    """Groups of the pixels sharing an offset inside ``cell`` x ``cell`` cells (stride ``cell``).

    Returns (B * cell * cell, (H / cell) * (W / cell), C); token order is row-major over the
    lattice.
    """
    b, h, w, c = ops.shape(x)
    x = ops.reshape(x, (b, h // cell, cell, w // cell, cell, c))
    x = ops.transpose(x, (0, 2, 4, 1, 3, 5))
    return ops.reshape(x, (b * cell * cell, (h // cell) * (w // cell), c))


def merge_lattice_groups(groups, shape, cell):
    """Inverse of :func:`lattice_groups` for an input of ``shape`` (B, H, W, ...)."""
    b, h, w = shape[0], shape[1], shape[2]
    c = ops.shape(groups)[-1]
    x = ops.reshape(groups, (b, cell, cell, h // cell, w // cell, c))
    x = ops.transpose(x, (0, 3, 1, 4, 2, 5))
    return ops.reshape(x, (b, h, w, c))


def block_groups(x, cell):
    """Groups of the contiguous ``cell`` x ``cell`` blocks: (B * H/cell * W/cell, cell*cell, C)."""
    b, h, w, c = ops.shape(x)
    x = ops.reshape(x, (b, h // cell, cell, w // cell, cell, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b * (h // cell) * (w // cell), cell * cell, c))


def merge_block_groups(groups, shape, cell):
    """Inverse of :func:`block_groups` for an input of ``shape`` (B, H, W, ...)."""
    b, h, w = shape[0], shape[1], shape[2]
    c = ops.shape(groups)[-1]
    x = ops.reshape(groups, (b, h // cell, w // cell, cell, cell, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, h, w, c))


def whole_image_groups(x, cell=None):
    """All positions of each image as one group: (B, H*W, C)."""
    b, h, w, c = ops.shape(x)
    return ops.reshape(x, (b, h * w, c))


def merge_whole_image_groups(groups, shape, cell=None):
    return ops.reshape(groups, (shape[0], shape[1], shape[2], ops.shape(groups)[-1]))


def sub_images(x, stride):
    """The ``stride`` x ``stride`` interlaced sub-images as a batch: (B*stride^2, H/stride, W/stride, C)."""
    b, h, w, c = ops.shape(x)
    x = ops.reshape(x, (b, h // stride, stride, w // stride, stride, c))
    x = ops.transpose(x, (0, 2, 4, 1, 3, 5))
    return ops.reshape(x, (b * stride * stride, h // stride, w // stride, c))


def merge_sub_images(images, shape, stride):
    """Inverse of :func:`sub_images`."""
    b, h, w = shape[0], shape[1], shape[2]
    c = ops.shape(images)[-1]
    x = ops.reshape(images, (b, stride, stride, h // stride, w // stride, c))
    x = ops.transpose(x, (0, 3, 1, 4, 2, 5))
    return ops.reshape(x, (b, h, w, c))


GROUPINGS = {
    "image": (whole_image_groups, merge_whole_image_groups),
    "lattice": (lattice_groups, merge_lattice_groups),
    "block": (block_groups, merge_block_groups),
}


def hierarchical_tokens_per_query(height, width, outer_partition, inner_partition):
    """Tokens each position attends to in the three attentions of the two-level form.

    (inner long range, inner short range, outer short range); their sum sets the attention
    FLOPs and the affinity memory: ``H*W * sum`` scores.
    """
    cell = outer_partition * inner_partition
    return ((height // cell) * (width // cell), inner_partition ** 2, outer_partition ** 2)


def balanced_partitions(height, width, candidates=(2, 4, 8, 16, 32, 64)):
    """(outer, inner) partitions of the two-level attention minimising the tokens per query.

    SSAN's complexity analysis reaches O((HW)^(4/3)) only when the partitions grow with the map
    (each group ~ (HW)^(1/3) tokens); fixed partitions (the authors' 8, 4) make the inner long
    range grow like HW and the cost like (HW)^2 / 1024. The attention weights do not depend on
    the partitions, so a layer can be rebuilt with these for large maps.

    Example:
        >>> balanced_partitions(512, 512)
        (8, 8)
    """
    best = None
    for outer in candidates:
        for inner in candidates:
            if height % (outer * inner) or width % (outer * inner):
                continue
            cost = sum(hierarchical_tokens_per_query(height, width, outer, inner))
            if best is None or cost < best[0]:
                best = (cost, outer, inner)
    if best is None:
        raise EmzooError(describe("No partition pair divides the map.",
                                  f"H and W multiples of {min(candidates) ** 2}",
                                  height=height, width=width))
    return best[1], best[2]


# ------------------------------------------------------------------------------------ layers
def _attention_args(reduction, scale_scores):
    return check_integer("reduction", reduction), bool(scale_scores)


@keras.saving.register_keras_serializable(package="emzoo")
class SelfAttention(keras.layers.Layer):
    """SAGAN self-attention unit: ``gamma * softmax(q k^T) v + x`` over all positions.

    Args:
        reduction: channel reduction k of the query and key projections (C/k channels; the
            SSAN code and Table 2's parameter counts use k = 8).
        scale_scores: divide the scores by sqrt(C/2), the paper's equation (d = C/2). Default
            ``False`` follows the authors' code (``Self_Attn`` has no scaling) whose parameter
            and FLOP counts Table 2 reports.

    ``call(x)`` attends over all H*W positions of each image; :meth:`attend` applies the same
    unit to groups of positions (see the module docstring), which is how the sparse forms use it.

    Example:
        >>> attention = SelfAttention()
        >>> tuple(attention(keras.ops.ones((2, 4, 4, 16))).shape)  # gamma = 0: the identity at first
        (2, 4, 4, 16)
    """

    def __init__(self, reduction=8, scale_scores=False, **kwargs):
        super().__init__(**kwargs)
        self.reduction, self.scale_scores = _attention_args(reduction, scale_scores)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels < self.reduction:
            raise EmzooError(describe(
                f"SelfAttention `{self.name}` reduces its {channels} input channels by "
                f"`reduction`={self.reduction}.", f"at least {self.reduction} input channels",
                channels=channels, reduction=self.reduction))
        key_channels = channels // self.reduction
        self.query = keras.layers.Conv2D(key_channels, 1, name="query")
        self.key = keras.layers.Conv2D(key_channels, 1, name="key")
        self.value = keras.layers.Conv2D(channels, 1, name="value")
        for projection in (self.query, self.key, self.value):
            projection.build(input_shape)
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")
        self._score_scale = (channels / 2.0) ** -0.5 if self.scale_scores else None
        super().build(input_shape)

    def attend(self, x, grouping="image", cell=None):
        """Applies the unit within groups of positions: ``"image"``, ``"lattice"`` or ``"block"``.

        ``cell`` is the lattice stride or block size (ignored for ``"image"``).
        """
        split, merge = GROUPINGS[grouping]
        shape = ops.shape(x)
        query = split(self.query(x), cell)
        key = split(self.key(x), cell)
        value = split(self.value(x), cell)
        scores = ops.matmul(query, ops.transpose(key, (0, 2, 1)))
        if self._score_scale is not None:
            scores = scores * self._score_scale
        context = ops.matmul(ops.softmax(scores, axis=-1), value)
        return ops.cast(self.gamma, x.dtype) * merge(context, shape, cell) + x

    def call(self, x):
        return self.attend(x, "image")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, scale_scores=self.scale_scores)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class InterlacedSparseAttention(keras.layers.Layer):
    """One-level interlaced sparse self-attention: long range at stride P, then P x P blocks.

    Two independent SAGAN units: ``long_range`` over each stride-``partition`` lattice
    ((H/P)*(W/P) tokens), then ``short_range`` inside each contiguous P x P block (P*P tokens).
    H and W must be multiples of ``partition`` (an :class:`EmzooError` says so otherwise).

    Args:
        partition: the cell size P. Default 8: the one-level baseline ("SSA") of SSAN's Table 2,
            whose 81.24 GFLOPs at 64 x 512 x 512 match P = 8 (and ISANet's down factor 8).
            Inside :class:`HierarchicalSparseAttention` the authors use P = 4.
        reduction, scale_scores: as in :class:`SelfAttention`.

    Example:
        >>> isa = InterlacedSparseAttention(partition=4)
        >>> tuple(isa(keras.ops.zeros((1, 16, 8, 16))).shape)
        (1, 16, 8, 16)
    """

    def __init__(self, partition=8, reduction=8, scale_scores=False, **kwargs):
        super().__init__(**kwargs)
        self.partition = check_integer("partition", partition)
        self.reduction, self.scale_scores = _attention_args(reduction, scale_scores)

    @property
    def size_multiple(self):
        return self.partition

    def build(self, input_shape):
        _check_divisible(self, input_shape, self.size_multiple, f"partition {self.partition}")
        self.long_range = SelfAttention(self.reduction, self.scale_scores, name="long_range")
        self.short_range = SelfAttention(self.reduction, self.scale_scores, name="short_range")
        self.long_range.build(input_shape)
        self.short_range.build(input_shape)
        super().build(input_shape)

    def call(self, x, partition=None):
        """``partition`` overrides P for this call (the weights do not depend on it)."""
        partition = self.partition if partition is None else int(partition)
        _check_divisible(self, x.shape, partition, f"partition {partition}")
        x = self.long_range.attend(x, "lattice", partition)
        return self.short_range.attend(x, "block", partition)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(partition=self.partition, reduction=self.reduction,
                      scale_scores=self.scale_scores)
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class HierarchicalSparseAttention(keras.layers.Layer):
    """SSAN's two-level sparse self-attention (the attention-aware layer's core).

    1. Split the map into ``outer_partition``^2 interlaced sub-images (stride R) and run an
       :class:`InterlacedSparseAttention` with ``inner_partition`` P' on each (shared weights):
       its long range covers a stride R*P' lattice, its short range a P' x P' lattice at stride R.
    2. Merge back and run a SAGAN unit inside each contiguous R x R block.

    Three SAGAN units in all (3 * 5,201 = 15,603 parameters at C = 64: Table 2's 0.0156 M).
    Tokens per group at H x W: (H/(R P'))*(W/(R P')), P'^2 and R^2; at 512 x 512 with the
    defaults 256, 16 and 64, against N = 262,144 for dense attention.

    Args:
        outer_partition: R (authors' code: 8).
        inner_partition: P' (authors' code: 4). H and W must be multiples of R * P' (32).
        reduction, scale_scores: as in :class:`SelfAttention`.
        adaptive: pick (R, P') per input size with :func:`balanced_partitions` (the same
            weights), so that the cost grows like (HW)^(4/3) as in SSAN's analysis instead of
            (HW)^2 with fixed partitions; needs static H and W (else the configured pair is used).
            Off by default: the authors' fixed (8, 4).

    Example:
        >>> hsa = HierarchicalSparseAttention(outer_partition=2, inner_partition=2)
        >>> tuple(hsa(keras.ops.zeros((1, 8, 12, 8))).shape)
        (1, 8, 12, 8)
    """

    def __init__(self, outer_partition=8, inner_partition=4, reduction=8, scale_scores=False,
                 adaptive=False, **kwargs):
        super().__init__(**kwargs)
        self.outer_partition = check_integer("outer_partition", outer_partition)
        self.inner_partition = check_integer("inner_partition", inner_partition)
        self.reduction, self.scale_scores = _attention_args(reduction, scale_scores)
        self.adaptive = bool(adaptive)

    def partitions_for(self, height, width):
        """(R, P') used on an ``height x width`` map: the configured pair, or with ``adaptive``
        the :func:`balanced_partitions` of that size (when the size is known)."""
        if self.adaptive and height is not None and width is not None:
            return balanced_partitions(int(height), int(width))
        return self.outer_partition, self.inner_partition

    @property
    def size_multiple(self):
        return self.outer_partition * self.inner_partition

    def _why(self):
        return (f"outer_partition {self.outer_partition} x inner_partition "
                f"{self.inner_partition}")

    def build(self, input_shape):
        _check_divisible(self, input_shape, self.size_multiple, self._why())
        r = self.outer_partition
        sub_shape = (None if input_shape[0] is None else input_shape[0] * r * r,
                     None if input_shape[1] is None else input_shape[1] // r,
                     None if input_shape[2] is None else input_shape[2] // r, input_shape[3])
        self.sub_image_attention = InterlacedSparseAttention(
            self.inner_partition, self.reduction, self.scale_scores, name="sub_image_attention")
        self.sub_image_attention.build(sub_shape)
        self.short_range = SelfAttention(self.reduction, self.scale_scores, name="short_range")
        self.short_range.build(input_shape)
        super().build(input_shape)

    def call(self, x):
        _check_divisible(self, x.shape, self.size_multiple, self._why())
        r, inner = self.partitions_for(x.shape[1], x.shape[2])
        shape = ops.shape(x)
        x = merge_sub_images(self.sub_image_attention(sub_images(x, r), partition=inner), shape, r)
        return self.short_range.attend(x, "block", r)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(outer_partition=self.outer_partition, inner_partition=self.inner_partition,
                      reduction=self.reduction, scale_scores=self.scale_scores,
                      adaptive=self.adaptive)
        return config
