"""Tests of emzoo.engine.progress: the progress line."""

import io

from emzoo.engine import Progress


def test_progress_line_shows_done_rate_and_eta():
    stream = io.StringIO()
    bar = Progress(10, "upscale", stream=stream, interval=0)
    bar.update(4)
    bar.close()
    text = stream.getvalue()
    assert "4/10 slices" in text and "slices/s" in text and "ETA" in text
    assert bar.done == 4 and text.endswith("\n")
