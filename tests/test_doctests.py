"""The docstrings' examples run: every module's doctests (those not marked ``+SKIP``, which need
files or a trained model) pass, so an example a user copies is one that works."""

import doctest
import importlib
import pkgutil

import pytest

import emzoo

pytestmark = pytest.mark.tf_only

# emzoo.napari needs Qt (the napari tests run it in a viewer); emzoo.apps define absl flags at
# import, so one process can import only one of them (tests/apps run each app as a program).
# An installed emzoo holds emzoo.apps inside the package; an editable one maps it from apps/.
SKIPPED_PACKAGES = ("emzoo.napari", "emzoo.apps")
SLOW_MODULES = ("emzoo.models.tsain.model", "emzoo.zoo")  # build published configurations (15-20 s)
MODULES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODULES else name
           for name in sorted(info.name for info in pkgutil.walk_packages(emzoo.__path__, "emzoo.")
                              if not info.name.startswith(SKIPPED_PACKAGES))]
MODULES.append("emzoo_test_helpers")  # the test suite's own helpers (tests/), examples included


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
