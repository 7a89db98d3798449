"""``emzoo``'s entry point: plain-text help with each flag once, and quiet ends of closed pipes."""

import subprocess

from app_runner import _command, run_emzoo

from emzoo.apps import main as entry


def test_help_is_plain_text_with_each_flag_once_and_plain_defaults(tmp_path):
    done = run_emzoo(["upscale", "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for markup in ("``", ":mod:", ":func:", "Alias for"):
        assert markup not in text, markup
    assert "--batch_size" not in text and text.count("--batch-size:") == 1
    assert "--overlap: Overlap of neighbouring tiles in pixels. (default: 32)" in text
    assert "'32'" not in text
    assert max(len(line) for line in text.split("flags:")[1].splitlines()) <= 100


def test_plain_text_drops_roles_and_literals():
    assert entry.plain_text("See :mod:`~emzoo.engine`, ``sample`` and :func:`emzoo.load`.") == (
        "See emzoo.engine, sample and emzoo.load.")


class _ClosedPipe:
    """A stdout whose reader has gone: every write and flush raises BrokenPipeError."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise ValueError("no descriptor")


def test_a_closed_pipe_ends_quietly_with_status_0(monkeypatch, capsys):
    safe = entry._PipeSafe(_ClosedPipe())
    monkeypatch.setattr("sys.stdout", safe)
    assert entry.run(["emzoo", "--help"]) == 0
    print("more after the reader has gone")
    safe.flush()
    assert safe.reader_gone


def test_list_long_into_a_reader_that_stops_after_one_line(tmp_path):
    command, env = _command(["list", "--long"], "", {"EMZOO_HOME": str(tmp_path / "cache")})
    # A small pipe buffer is not needed: the reader closes before the list is written.
    code = command[2].replace("sys.exit(run(", "import time; time.sleep(2); sys.exit(run(")
    process = subprocess.Popen([command[0], "-c", code] + command[3:], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    process.stdout.close()  # like `| head -0`
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert b"Broken pipe" not in err and b"Traceback" not in err
