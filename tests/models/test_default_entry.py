"""The bundled default model gives the outputs it gave before the package was reorganised.

The values were computed with ``emzoo.load("default")`` on the tree before the layout issue moved
the architectures into folders (commit 9ae3b67), on the fixed smooth input below.
"""

import numpy as np
import pytest

import emzoo

pytestmark = pytest.mark.tf_only

GOLDEN = {(0, 0): 0.5835211873054504, (10, 20): 0.47815239429473877, (31, 31): 0.4934130012989044,
          (40, 5): 0.823935329914093, (63, 63): 0.4228379726409912, (17, 50): 0.7260730266571045}
GOLDEN_MEAN, GOLDEN_STD = 0.4987398087978363, 0.1921433061361313


def fixed_pair():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    x0 = 0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    x1 = 0.5 + 0.4 * np.sin((xx + 2) / 5.0) * np.cos((yy + 1) / 7.0)
    return x0[None, ..., None].astype(np.float32), x1[None, ..., None].astype(np.float32)


def test_default_outputs_are_unchanged():
    model = emzoo.load("default", compile=False)
    x0, x1 = fixed_pair()
    out = np.asarray(model({"x0": x0, "x1": x1, "time": np.full((1, 1), 0.5, np.float32)},
                           training=False)["image"])
    got = {p: float(out[0, p[0], p[1], 0]) for p in GOLDEN}
    for point, value in GOLDEN.items():
        assert got[point] == pytest.approx(value, abs=2e-5), point
    assert float(out.mean()) == pytest.approx(GOLDEN_MEAN, abs=1e-5)
    assert float(out.std()) == pytest.approx(GOLDEN_STD, abs=1e-5)
