"""Every architecture builds, runs and trains under the mixed_float16 and mixed_bfloat16 policies.

Outputs stay float32 (the engines, losses and metrics see float32 whatever the policy).
"""

import keras
import numpy as np
import pytest

import emzoo
from emzoo import testing

TINY = {
    "film": dict(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1, sub_levels=2,
                 filters=4, flow_convs=[1, 1], flow_filters=[4, 4], residual=True,
                 aux_outputs=True),
    "tsain": dict(filters=8, extraction_blocks=1, reconstruction_blocks=1, deformable_groups=2,
                  spatial_adaptive_blocks=1, rsab_deformable_groups=1, refinement_blocks=1,
                  pyramid_levels=2, remat=False),
    "ssan": dict(rdn_blocks=1, rdn_layers=2, rdn_growth=4, features=8, outer_partition=2,
                 inner_partition=2, attention_reduction=4, hybrid_width=8, hybrid_blocks=1),
    "dan": dict(rdn_blocks=1, rdn_layers=2, rdn_growth=4, features=8, outer_partition=2,
                inner_partition=2, attention_reduction=4, blend_width=8),
}
POLICIES = ("mixed_float16", "mixed_bfloat16")


@pytest.fixture
def policy(request):
    """Sets the global dtype policy for one test and restores float32 afterwards."""
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


# Every architecture under both policies behind the slow marker (each takes 20-60 s on 2 cores);
# the fast suite trains in bfloat16 in tests/adaptation/test_fine_tune.py and runs the engine in
# it in tests/engine/test_precision.py.
CASES = [pytest.param(architecture, policy, marks=pytest.mark.slow)
         for architecture in sorted(TINY) for policy in POLICIES]


@pytest.mark.parametrize("architecture, policy", CASES, indirect=["policy"])
def test_builds_runs_and_trains(architecture, policy):
    model = emzoo.load(architecture, weights=None, compile=False, channels=1, **TINY[architecture])
    assert model.dtype_policy.name == policy
    inputs, y = testing.random_inputs(2, 16, 16, 1)
    outputs = model(inputs, training=False)
    for value in keras.tree.flatten(outputs):
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
    image = np.asarray(keras.ops.convert_to_numpy(outputs["image"]))
    assert image.shape == (2, 16, 16, 1) and np.isfinite(image).all()

    before = [np.array(w) for w in model.get_weights()]
    for loss in ("mean_absolute_error", testing.paper_loss(architecture)):  # L1, then the paper's
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=[],
                      jit_compile=False)
        losses = [float(np.asarray(model.train_on_batch(inputs, y)).reshape(-1)[0])
                  for _ in range(2)]
        assert np.isfinite(losses).all(), (loss, losses)
    assert any(not np.allclose(u, v) for u, v in zip(before, model.get_weights()))
    assert keras.mixed_precision.global_policy().name == policy


def test_film_under_bfloat16_keeps_float32_flows_and_grey_levels():
    """Flows, warping and FILM's residual image stay float32: a residual FILM that starts as
    linear interpolation gives the frames' mean to float32 precision under mixed_bfloat16."""
    from emzoo.models.film import FILM

    inputs, _ = testing.random_inputs(1, 16, 16, 1)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = FILM(channels=1, **TINY["film"])
        model.build_for_weights()
        for predictor in model.flow_predictors:  # zero flows: the output is exactly the mean
            predictor.convs[-1].kernel.assign(np.zeros(predictor.convs[-1].kernel.shape))
        model.fusion.convs[-1].kernel.assign(np.zeros(model.fusion.convs[-1].kernel.shape))
        image = np.asarray(keras.ops.convert_to_numpy(model(inputs)["image"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(image, 0.5 * (inputs["x0"] + inputs["x1"]), atol=1e-6)
