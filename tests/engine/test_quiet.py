"""Tests of emzoo.engine.quiet: the first ``import tensorflow`` runs with stderr captured (replayed
if it fails), ``verbose`` keeps everything, and the Dask preload quiets a worker as it starts.

The cases run in fresh interpreters, with a stand-in ``tensorflow`` module that writes to file
descriptor 2 the way TensorFlow's C++ start-up code does.
"""

import os
import subprocess
import sys
import textwrap

FAKE_TENSORFLOW = """
import os
os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\\n")
if os.environ.get("FAKE_TF_FAILS"):
    raise ImportError("libtensorflow.so: cannot open shared object file")
"""


def _run(tmp_path, code, fails=False):
    (tmp_path / "tensorflow.py").write_text(FAKE_TENSORFLOW)
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"FAKE_TF_FAILS": "1"} if fails else {})
    script = f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_first_tensorflow_import_is_silent_and_the_importer_removes_itself(tmp_path):
    done = _run(tmp_path, """
        from emzoo.engine.quiet import _QuietTensorFlowImport, quiet_logs, worker_preloads
        quiet_logs(verbose=False)
        quiet_logs(verbose=False)  # twice: still one importer
        assert sum(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path) == 1
        import tensorflow
        import os
        assert not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path)
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        print(worker_preloads())
        sys.stderr.write("after\\n")
        """)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "after\n"
    assert done.stdout.strip() == "['emzoo.engine.quiet']"


def test_a_failed_import_replays_what_it_wrote(tmp_path):
    done = _run(tmp_path, """
        from emzoo.engine.quiet import quiet_logs
        quiet_logs(verbose=False)
        import tensorflow
        """, fails=True)
    assert done.returncode == 1
    assert "oneDNN custom operations" in done.stderr and "cannot open shared object" in done.stderr


def test_a_missing_tensorflow_is_still_missing(tmp_path):
    done = _run(tmp_path, """
        from emzoo.engine.quiet import quiet_logs
        sys.path[:] = [p for p in sys.path if p not in ("", {folder!r}) and "-packages" not in p]
        quiet_logs(verbose=False)
        try:
            import tensorflow
        except ModuleNotFoundError as error:
            print("missing", error.name)
        """.format(folder=str(tmp_path)))
    assert done.returncode == 0 and done.stdout.strip() == "missing tensorflow", done.stderr
    assert done.stderr == ""


def test_verbose_keeps_the_lines_and_quiets_no_worker(tmp_path):
    done = _run(tmp_path, """
        from emzoo.engine.quiet import quiet_logs, worker_preloads
        quiet_logs(verbose=True)
        import tensorflow
        print(worker_preloads())
        """)
    assert done.returncode == 0, done.stderr
    assert "oneDNN custom operations" in done.stderr and done.stdout.strip() == "[]"


def test_the_dask_preload_quiets_the_worker_it_starts_in(tmp_path):
    done = _run(tmp_path, """
        import importlib
        from emzoo.engine.quiet import worker_preloads
        module = importlib.import_module(worker_preloads()[0])  # what Dask does in a new worker
        module.dask_setup(object())  # and then calls, before any task
        import tensorflow
        sys.stderr.write("after\\n")
        """)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "after\n"
