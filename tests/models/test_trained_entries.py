"""The trained compact entries (``dan-em``, ``ssan-em``, ``tsain-em``) load their bundled weights offline
and compute what they computed when they were bundled.

Each entry's values were computed with ``emzoo.load(name)`` on the fixed smooth pair of
:func:`fixed_pair` when its weights were bundled (sha256 prefix beside them): a change to the
architecture's code, the weight loading or the input normalisation that changes what a trained
entry computes fails here. New weights need new values. The default has its own pinned outputs
(``test_default_entry.py``); every other entry's build, forward and config round trip, with
random weights, is checked in ``tests/test_zoo.py`` (for the bundled ones: in the slow run).
"""

import numpy as np
import pytest

import emzoo
from emzoo import weights
from emzoo_test_helpers import fixed_pair

pytestmark = pytest.mark.tf_only

# name: (sha256 prefix, output mean, output std, {(y, x): output value})
PINNED = {
    "dan-em": ("c692701e", 0.5091655254364014, 0.18390586972236633,
               {(0, 0): 0.5873637795448303, (31, 31): 0.49291640520095825,
                (63, 63): 0.42597535252571106, (17, 50): 0.7273123860359192}),
    "ssan-em": ("36c5c71a", 0.5076260566711426, 0.18321512639522552,
                {(0, 0): 0.591037392616272, (31, 31): 0.497905433177948,
                 (63, 63): 0.42103689908981323, (17, 50): 0.7312661409378052}),
    "tsain-em": ("fb30578b", 0.5089569091796875, 0.18285821378231049,
                 {(0, 0): 0.5820774435997009, (31, 31): 0.49573054909706116,
                  (63, 63): 0.42816048860549927, (17, 50): 0.726466953754425}),
}


def test_every_bundled_entry_has_pinned_outputs():
    bundled = {name for name in emzoo.list_models()
               if weights.source(emzoo.describe_model(name)["weights"]) == "bundled"}
    assert bundled - {"default"} == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_trained_entry_loads_offline_and_its_outputs_are_unchanged(name, emzoo_home):
    sha_prefix, mean, std, points = PINNED[name]
    entry = emzoo.describe_model(name)
    assert entry["weights"]["sha256"].startswith(sha_prefix), "new bundled weights need new values"
    model = emzoo.load(name, compile=False)    # bundled: nothing fetched, nothing cached
    assert not emzoo_home.exists() or not any(emzoo_home.rglob("*.h5"))
    assert model.count_params() == entry["metadata"]["params"]
    assert model.size_multiple == entry["metadata"]["size_multiple"]
    assert model.get_config() == entry["config"] | {"channels": model.channels}
    x0, x1 = fixed_pair()
    out = np.asarray(model({"x0": x0, "x1": x1, "time": np.full((1, 1), 0.5, np.float32)},
                           training=False)["image"])
    for point, value in points.items():
        assert float(out[0, point[0], point[1], 0]) == pytest.approx(value, abs=2e-5), point
    assert float(out.mean()) == pytest.approx(mean, abs=1e-5)
    assert float(out.std()) == pytest.approx(std, abs=1e-5)
