"""Runs ``emzoo`` commands in a fresh interpreter for the app tests, filters start-up chatter, and
checks the one-line errors every app gives for user mistakes."""

import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]


# A prelude that makes `import tensorflow` fail as on a plain `pip install emzoo` (no extra).
NO_TENSORFLOW = """
import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
sys.meta_path.insert(0, _NoTensorFlow())
"""


def _command(args, prelude, env_vars):
    code = (textwrap.dedent(prelude) + "\nimport sys\nfrom emzoo.apps.main import run\n"
            "sys.exit(run(['emzoo'] + sys.argv[1:]))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", EMZOO_VGG_WEIGHTS="random")
    env.update(env_vars)
    env = {name: value for name, value in env.items() if value is not None}
    return [sys.executable, "-c", code] + [str(a) for a in args], env


def _cwd(cwd):
    """The folder a command runs in: never the repository root, whose emzoo/ folder would shadow
    the installed package (``python -c`` puts the working folder first on sys.path)."""
    return tempfile.gettempdir() if cwd is None else cwd


def run_emzoo(args, cwd=None, prelude="", timeout=600, **env_vars):
    """Runs ``emzoo ARGS`` (the console script's code) after ``prelude`` (e.g. a monkeypatch).

    The installed emzoo runs (as the ``emzoo`` command would); ``env_vars`` are added to the
    environment (a value of ``None`` removes the variable).
    """
    command, env = _command(args, prelude, env_vars)
    return subprocess.run(command, cwd=_cwd(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)


def start_emzoo(args, cwd=None, prelude="", **env_vars):
    """Starts ``emzoo ARGS`` like :func:`run_emzoo` without waiting (a ``subprocess.Popen``)."""
    command, env = _command(args, prelude, env_vars)
    return subprocess.Popen(command, cwd=_cwd(cwd), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def error_lines(done):
    """stderr lines that are not TensorFlow / absl start-up chatter."""
    return [line for line in done.stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log", "I0000", "W0000",
                                                      "E0000", "To enable"))
            and "cpu_feature_guard" not in line]


def assert_one_line_error(done, match, folder, before):
    """A failed command: non-zero exit, no traceback, one ``emzoo: error:`` line containing
    ``match``, and ``folder`` listing exactly ``before`` (no output, no temporary left behind)."""
    lines = error_lines(done)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("emzoo: error:"), lines
    assert match in lines[0], lines[0]
    assert sorted(os.listdir(folder)) == before
