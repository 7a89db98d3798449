"""Tests of emzoo.engine.policy: when model calls are XLA-compiled."""

import keras
import pytest

from emzoo.engine.policy import XLA_MIN_CALLS, default_batch_size, resolve_jit_compile
from emzoo.errors import EmzooError


def test_auto_xla_only_for_reused_features_on_long_tensorflow_jobs():
    on_tf = keras.backend.backend() == "tensorflow"
    assert resolve_jit_compile("auto", reuse_features=True) == on_tf
    assert resolve_jit_compile("AUTO", reuse_features=True, calls=XLA_MIN_CALLS) == on_tf
    assert not resolve_jit_compile("auto", reuse_features=True, calls=XLA_MIN_CALLS - 1)
    assert not resolve_jit_compile("auto", reuse_features=False)
    assert resolve_jit_compile(True, reuse_features=False) is True
    with pytest.raises(EmzooError, match="jit_compile"):
        resolve_jit_compile("always", reuse_features=True)


def test_default_batch_size_is_one_or_four():
    assert default_batch_size() in (1, 4)
