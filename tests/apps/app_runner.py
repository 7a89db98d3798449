"""Runs ``emzoo`` commands in a fresh interpreter for the app tests, and filters start-up chatter."""

import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]


def run_emzoo(args, cwd, prelude="", timeout=600):
    """Runs ``emzoo ARGS`` (the console script's code) after ``prelude`` (e.g. a monkeypatch)."""
    code = (textwrap.dedent(prelude) + "\nimport sys\nfrom emzoo.apps.main import run\n"
            "sys.exit(run(['emzoo'] + sys.argv[1:]))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO),
               EMZOO_VGG_WEIGHTS="random")
    return subprocess.run([sys.executable, "-c", code] + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(done):
    """stderr lines that are not TensorFlow / absl start-up chatter."""
    return [line for line in done.stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log", "I0000", "W0000",
                                                      "E0000", "To enable"))
            and "cpu_feature_guard" not in line]
