"""Tests of emzoo.engine.progress: a bar on a terminal, plain lines (or nothing) in logs."""

import io

from emzoo.engine import Progress
from emzoo_test_helpers import TerminalStream


def test_terminal_bar_shows_done_rate_and_eta():
    stream = TerminalStream()
    bar = Progress(10, "upscale", stream=stream, interval=0)
    bar.update(4)
    bar.close()
    text = stream.getvalue()
    assert "4/10 slices" in text and "slices/s" in text and "ETA" in text
    assert bar.done == 4 and text.endswith("\n")


def test_log_gets_plain_lines_not_redraws():
    stream = io.StringIO()  # not a terminal, like stderr sent to a file or a pipe
    bar = Progress(100, "upscale", stream=stream, log_interval=0)
    for _ in range(100):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("upscale 100/100 slices (100%)") and "ETA" in lines[-1]
    assert all(line.startswith("upscale ") for line in lines)


def test_short_job_in_a_log_writes_nothing():
    stream = io.StringIO()
    bar = Progress(100, "repair", stream=stream)  # a line every 30 s: this job is shorter
    for _ in range(100):
        bar.update()
    bar.close()
    assert stream.getvalue() == "" and bar.done == 100 and bar.seconds >= 0


def test_disabled_progress_writes_nothing_anywhere():
    stream = TerminalStream()
    bar = Progress(5, "upscale", enabled=False, stream=stream)
    bar.update(5)
    bar.close()
    assert stream.getvalue() == "" and bar.done == 5


def test_resumed_job_starts_at_its_count_and_shows_its_status_without_a_rate():
    stream = io.StringIO()
    bar = Progress(600, "adapt", stream=stream, log_interval=0, unit="s", initial=100,
                   show_rate=False)
    bar.set_status("step 12, best held-out error 0.0012")
    bar.update(50)
    bar.close()
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("adapt 150/600 s (25%)") and "/s" not in line
    assert line.endswith(", step 12, best held-out error 0.0012") and bar.done == 150


def test_a_job_ending_before_its_total_does_not_repeat_its_last_line_in_a_log():
    stream = io.StringIO()
    bar = Progress(100, "adapt", stream=stream, log_interval=0)
    bar.update(40)  # writes "40/100"
    bar.close()  # nothing changed since: no second line
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == ["adapt 40/100 slices"]
    bar = Progress(100, "adapt", stream=stream, log_interval=0)
    bar.update(40)
    bar.set_status("stopped early")
    bar.close()  # the status changed: one more line says so
    assert stream.getvalue().splitlines()[-1].endswith("stopped early")
    assert len(stream.getvalue().splitlines()) == 3


def test_the_time_left_leaves_out_the_first_slice_s_warm_up(monkeypatch):
    """The first slice takes 100 s (model loaded, compiled), every next one 1 s: after five
    slices, five are left, 5 s (not the 100 s an average over all of them would give)."""
    from emzoo.engine import progress

    clock = iter([0.0, 100.0, 101.0, 102.0, 103.0, 104.0])
    monkeypatch.setattr(progress.time_lib, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    bar = Progress(10, "upscale", stream=stream, log_interval=0)
    for _ in range(5):
        bar.update()
    lines = stream.getvalue().splitlines()
    assert "ETA ?" in lines[0]                      # one slice: no estimate yet
    assert lines[-1].startswith("upscale 5/10 slices (50%)"), lines
    assert "1.00 slices/s" in lines[-1] and "ETA 00:05" in lines[-1], lines


def test_the_terminal_bar_starts_its_rate_after_the_first_slice():
    stream = TerminalStream()
    bar = Progress(10, "upscale", stream=stream, interval=0)
    bar.update()
    assert bar._bar.n == bar._bar.initial == 1          # tqdm counts its rate from here
    bar.update(3)
    bar.close()
    assert "4/10 slices" in stream.getvalue()
