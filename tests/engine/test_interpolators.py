"""Tests of emzoo.engine.interpolators: model specs, ensembles and their engine."""

import numpy as np
import pytest

from emzoo.engine import upscale_volume
from emzoo.engine.interpolators import (Ensemble, EnsembleEngine, check_model_spec,
                                        ensemble_names, midpoint_engine)
from emzoo.engine.midpoint import MidpointEngine
from emzoo.errors import EmzooError, RandomWeightsError, UnknownModelError
from emzoo_test_helpers import MeanModel, TinyConvModel, TinyFeatureModel, random_volume


# ------------------------------------------------------------------------------------- specs
def test_ensemble_names_split_on_plus_but_not_an_existing_folder(tmp_path):
    assert ensemble_names("default+dan-em") == ["default", "dan-em"]
    assert ensemble_names(" default + flow ") == ["default", "flow"]
    assert ensemble_names("default") is None
    folder = tmp_path / "a+b"
    folder.mkdir()
    assert ensemble_names(str(folder)) is None  # a saved model whose name holds +


@pytest.mark.parametrize("spec", ["default+", "+default", "default++flow", "default+default"])
def test_bad_ensemble_spec_is_one_line(spec):
    with pytest.raises(EmzooError, match=r"Invalid ensemble.*Received: model=") as caught:
        ensemble_names(spec)
    assert "\n" not in str(caught.value)


def test_check_model_spec_names_the_member_at_fault_without_loading():
    assert check_model_spec("flow") == (1, True)
    assert check_model_spec("flow+default") == (16, True)
    with pytest.raises(UnknownModelError, match="no-such-model"):
        check_model_spec("default+no-such-model")
    with pytest.raises(RandomWeightsError, match="tsain"):  # random weights never in an ensemble
        check_model_spec("default+tsain", allow_random_weights=True)
    assert check_model_spec("tsain", allow_random_weights=True)[1] is False


# ---------------------------------------------------------------------------------- ensembles
def test_ensemble_midpoint_is_the_mean_of_its_members_at_every_level():
    volume = random_volume((3, 16, 24), seed=3)
    out = upscale_volume(volume, Ensemble([MeanModel(), TinyConvModel()]), factor=4,
                         progress=False, calibrate=False)["array"]
    # fresh members (seeded: the same weights), each traced at one size
    engines = [MidpointEngine(m, 16, 24, jit_compile=False) for m in (MeanModel(), TinyConvModel())]
    ends = {0: volume[0][..., None], 4: volume[1][..., None]}
    middle = np.mean([e.midpoints([(0, 4)], ends)[0] for e in engines], axis=0)
    np.testing.assert_allclose(out[2], middle[..., 0], atol=1e-6)  # level 1: the members' mean
    slices = {**ends, 2: middle}
    quarter = np.mean([e.midpoints([(0, 2)], slices)[0] for e in engines], axis=0)
    np.testing.assert_allclose(out[1], quarter[..., 0], atol=1e-6)  # level 2: from the mean


def test_ensemble_engine_tiles_alike_and_reuses_each_member_s_features():
    def ensemble():  # fresh members (seeded: the same weights), each traced at one size
        return Ensemble([TinyFeatureModel(), MeanModel()], ["film-like", "mean"])

    engine = midpoint_engine(ensemble(), 18, 34, tile=16, overlap=4, jit_compile=False)
    assert isinstance(engine, EnsembleEngine) and engine.precision == "float32"
    assert all(member.tiler is engine.tiler for member in engine.engines)
    assert [member.reuse_features for member in engine.engines] == [True, False]
    volume = random_volume((3, 18, 34), seed=4)
    tiled = upscale_volume(volume, ensemble(), factor=2, tile=16, overlap=4,
                           progress=False, calibrate=False)["array"]
    alone = upscale_volume(volume, TinyFeatureModel(), factor=2, tile=16, overlap=4,
                           progress=False, calibrate=False)["array"]
    mean = (volume[0] + volume[1]) / 2
    np.testing.assert_allclose(tiled[1], (alone[1] + mean) / 2, atol=1e-5)


@pytest.mark.slow
def test_named_ensemble_runs_from_a_spec_string():
    volume = (random_volume((3, 32, 32), seed=2) * 255).astype(np.uint8)
    result = upscale_volume(volume, "flow+default", factor=2, progress=False, calibrate=False)
    alone = [upscale_volume(volume, name, factor=2, progress=False,
                            calibrate=False)["array"][1].astype(float)
             for name in ("flow", "default")]
    assert np.abs(result["array"][1] - np.mean(alone, axis=0)).max() <= 0.5  # rounding only


def test_an_ensemble_needs_two_members():
    with pytest.raises(EmzooError, match="two or more members"):
        Ensemble([MeanModel()])


def test_an_ensemble_computes_in_one_precision(monkeypatch):
    from emzoo.flow import FlowInterpolator

    monkeypatch.setenv("EMZOO_FORCE_BF16", "1")  # bf16 allowed here: the flow member refuses it
    def ensemble():
        return Ensemble([MeanModel(), FlowInterpolator()])

    engine = midpoint_engine(ensemble(), 8, 8, precision="auto")  # flow: float32 only
    assert engine.precision == "float32"
    assert {member.precision for member in engine.engines} == {"float32"}
    with pytest.raises(EmzooError, match="cannot compute in bf16"):
        midpoint_engine(ensemble(), 8, 8, precision="bf16")
