"""Runs one pytest file under ``bazel test`` (py_test needs a main; the tests are pytest-style)."""

import os
import sys

import pytest

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # napari's pytest plugin (installed with the napari extra) writes to ~/.cache at start-up,
    # which the Bazel sandbox mounts read-only; the napari tests run outside Bazel.
    plugins = [] if "tests/napari/" in " ".join(sys.argv[1:]) else ["-p", "no:napari"]
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *plugins, "-m", "not slow",
                          *sys.argv[1:]]))
