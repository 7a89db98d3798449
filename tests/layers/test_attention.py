"""Tests of emzoo.layers.attention against NumPy references built from explicit index sets.

The references never reuse the layer's reshape/transpose logic: each group of positions is
listed by its defining property (same offset modulo P, same P x P block, ...), dense SAGAN
attention is applied to that list in NumPy, and the results are written back by index.
"""

import numpy as np
import pytest

import keras

from emzoo.errors import EmzooError
from emzoo.layers.attention import (HierarchicalSparseAttention, InterlacedSparseAttention,
                                    SelfAttention)


def unit_weights(unit):
    """(Wq, bq, Wk, bk, Wv, bv, gamma) of a SelfAttention as float64 NumPy arrays."""
    get = lambda v: np.asarray(keras.ops.convert_to_numpy(v), np.float64)
    return dict(wq=get(unit.query.kernel)[0, 0], bq=get(unit.query.bias),
                wk=get(unit.key.kernel)[0, 0], bk=get(unit.key.bias),
                wv=get(unit.value.kernel)[0, 0], bv=get(unit.value.bias),
                gamma=float(get(unit.gamma)), channels=get(unit.value.kernel).shape[-1])


def randomise(layer, rng):
    """Random weights everywhere, including non-zero gammas, so every term is exercised."""
    layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32")
                       for w in layer.get_weights()])


def np_dense_attention(tokens, w, scale_scores=False):
    """SAGAN on (T, C) tokens: gamma * softmax(q k^T [/ sqrt(C/2)]) v + x."""
    q = tokens @ w["wq"] + w["bq"]
    k = tokens @ w["wk"] + w["bk"]
    v = tokens @ w["wv"] + w["bv"]
    scores = q @ k.T
    if scale_scores:
        scores = scores / np.sqrt(w["channels"] / 2.0)
    scores -= scores.max(axis=1, keepdims=True)
    a = np.exp(scores)
    a /= a.sum(axis=1, keepdims=True)
    return w["gamma"] * (a @ v) + tokens


def np_grouped_attention(x, w, group_key, scale_scores=False):
    """Dense attention applied separately to each set of positions with equal ``group_key(i, j)``.

    Tokens inside a group are ordered row-major (attention is permutation-equivariant, so the
    order does not change the result).
    """
    out = np.empty_like(x)
    h, w_ = x.shape[1:3]
    groups = {}
    for i in range(h):
        for j in range(w_):
            groups.setdefault(group_key(i, j), []).append((i, j))
    for b in range(x.shape[0]):
        for positions in groups.values():
            rows, cols = np.array(positions).T
            out[b, rows, cols] = np_dense_attention(x[b, rows, cols], w, scale_scores)
    return out


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


@pytest.mark.parametrize("scale_scores", [False, True])
def test_self_attention_matches_numpy_dense(scale_scores):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 16)).astype("float32")
    layer = SelfAttention(reduction=8, scale_scores=scale_scores)
    layer.build(x.shape)
    randomise(layer, rng)
    expected = np_grouped_attention(x.astype(np.float64), unit_weights(layer),
                                    lambda i, j: 0, scale_scores)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-4, rtol=1e-4)


def test_interlaced_matches_grouped_dense_numpy():
    rng = np.random.default_rng(1)
    p = 3
    x = rng.normal(size=(2, 6, 9, 8)).astype("float32")
    layer = InterlacedSparseAttention(partition=p, reduction=4)
    layer.build(x.shape)
    randomise(layer, rng)
    long_w, short_w = unit_weights(layer.long_range), unit_weights(layer.short_range)
    y = np_grouped_attention(x.astype(np.float64), long_w, lambda i, j: (i % p, j % p))
    y = np_grouped_attention(y, short_w, lambda i, j: (i // p, j // p))
    np.testing.assert_allclose(to_numpy(layer(x)), y, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("outer,inner,height,width", [(2, 2, 8, 12), (4, 2, 16, 8)])
def test_hierarchical_matches_grouped_dense_numpy(outer, inner, height, width):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, height, width, 8)).astype("float32")
    layer = HierarchicalSparseAttention(outer_partition=outer, inner_partition=inner, reduction=4)
    layer.build(x.shape)
    randomise(layer, rng)
    inner_long = unit_weights(layer.sub_image_attention.long_range)
    inner_short = unit_weights(layer.sub_image_attention.short_range)
    outer_short = unit_weights(layer.short_range)
    r, p = outer, inner
    # Level 1 long range = per stride-r sub-image (i % r, j % r), an ISA with partition p on the
    # sub-image coordinates (i // r, j // r).
    y = np_grouped_attention(x.astype(np.float64), inner_long,
                             lambda i, j: (i % r, j % r, (i // r) % p, (j // r) % p))
    y = np_grouped_attention(y, inner_short,
                             lambda i, j: (i % r, j % r, (i // r) // p, (j // r) // p))
    # Level 1 short range: contiguous r x r blocks.
    y = np_grouped_attention(y, outer_short, lambda i, j: (i // r, j // r))
    np.testing.assert_allclose(to_numpy(layer(x)), y, atol=1e-4, rtol=1e-4)


def test_hierarchical_default_partitions_and_params():
    layer = HierarchicalSparseAttention()
    assert layer.size_multiple == 32
    layer.build((1, 64, 64, 64))
    # Three SAGAN units of 64*8+8 + 64*8+8 + 64*64+64 + 1 parameters (Table 2: 0.0156 M).
    assert layer.count_params() == 3 * (2 * (64 * 8 + 8) + 64 * 64 + 64 + 1) == 15603


@pytest.mark.parametrize("layer", [SelfAttention(), InterlacedSparseAttention(partition=4),
                                   HierarchicalSparseAttention(outer_partition=2, inner_partition=2)])
def test_gamma_zero_initialisation_is_identity(layer):
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 16)).astype("float32")
    np.testing.assert_array_equal(to_numpy(layer(x)), x)
    gammas = [w for w in layer.weights if w.path.endswith("gamma")]
    assert gammas and all(float(to_numpy(g)) == 0.0 for g in gammas)


def test_non_dividing_sizes_name_the_multiple():
    with pytest.raises(EmzooError, match=r"multiples of 32.*Received: height=48, width=64"):
        HierarchicalSparseAttention()(np.zeros((1, 48, 64, 16), "float32"))
    layer = InterlacedSparseAttention(partition=8)
    layer(np.zeros((1, 16, 16, 16), "float32"))
    with pytest.raises(EmzooError, match=r"multiples of 8.*pad the input, e.g. to 16 x 24"):
        layer(np.zeros((1, 16, 20, 16), "float32"))
    with pytest.raises(EmzooError, match="strictly positive"):
        InterlacedSparseAttention(partition=0)
    with pytest.raises(EmzooError, match="at least 8 input channels"):
        SelfAttention()(np.zeros((1, 4, 4, 4), "float32"))


@pytest.mark.parametrize("layer", [
    SelfAttention(reduction=4, scale_scores=True),
    InterlacedSparseAttention(partition=2, reduction=2),
    HierarchicalSparseAttention(outer_partition=2, inner_partition=2, reduction=4),
])
def test_config_round_trip(layer):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 8, 8, 8)).astype("float32")
    layer.build(x.shape)
    randomise(layer, rng)
    expected = to_numpy(layer(x))
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.built
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(restored(x)), expected, atol=1e-5)


def test_trains_inside_a_model_with_dynamic_size():
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, HierarchicalSparseAttention(2, 2, reduction=4)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mae")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 8, 8, 8)).astype("float32")
    model.fit(x, x[:, ::-1] * 0.5, epochs=2, verbose=0)
    gammas = [float(to_numpy(w)) for w in model.weights if w.path.endswith("gamma")]
    assert any(g != 0.0 for g in gammas)  # gradients reach gamma (and through it the projections)
    assert tuple(model(rng.normal(size=(1, 16, 12, 8)).astype("float32")).shape) == (1, 16, 12, 8)


def test_token_counts_and_balanced_partitions():
    from emzoo.layers.attention import balanced_partitions, hierarchical_tokens_per_query

    # The spec's counts at 256 x 256 (64, 16, 64) and at 512 x 512 (256, 16, 64).
    assert hierarchical_tokens_per_query(256, 256, 8, 4) == (64, 16, 64)
    assert hierarchical_tokens_per_query(512, 512, 8, 4) == (256, 16, 64)
    assert balanced_partitions(512, 512) == (8, 8)
    outer, inner = balanced_partitions(1024, 1024)
    assert sum(hierarchical_tokens_per_query(1024, 1024, outer, inner)) == 384
    with pytest.raises(EmzooError, match="No partition pair"):
        balanced_partitions(6, 6)


def test_adaptive_partitions_use_the_balanced_pair_with_the_same_weights():
    from emzoo.layers.attention import balanced_partitions

    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 32, 32, 8)).astype("float32")
    adaptive = HierarchicalSparseAttention(outer_partition=2, inner_partition=2, reduction=4,
                                           adaptive=True)
    adaptive.build(x.shape)
    randomise(adaptive, rng)
    outer, inner = balanced_partitions(32, 32)
    assert adaptive.partitions_for(32, 32) == (outer, inner) != (2, 2)
    fixed = HierarchicalSparseAttention(outer_partition=outer, inner_partition=inner, reduction=4)
    fixed.build(x.shape)
    fixed.set_weights(adaptive.get_weights())
    configured = HierarchicalSparseAttention(outer_partition=2, inner_partition=2, reduction=4)
    configured.build(x.shape)
    configured.set_weights(adaptive.get_weights())
    np.testing.assert_allclose(to_numpy(adaptive(x)), to_numpy(fixed(x)), atol=1e-5)
    assert np.abs(to_numpy(adaptive(x)) - to_numpy(configured(x))).max() > 1e-4
    assert HierarchicalSparseAttention.from_config(adaptive.get_config()).adaptive
