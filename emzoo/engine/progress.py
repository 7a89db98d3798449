"""The progress bar the volume jobs draw on stderr."""

import math
import sys
import time as time_lib


class Progress:
    """A one-line progress bar on stderr: slices done, slices/s and time left.

    Example:
        >>> bar = Progress(10, "upscale", enabled=False)
        >>> bar.update(3); bar.done
        3
    """

    def __init__(self, total, label, enabled=True, stream=None, interval=0.25):
        self.total, self.label, self.enabled = int(total), label, enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self.done = 0
        self.start = time_lib.perf_counter()
        self._last_draw = 0.0
        self._drawn = -1

    def update(self, count=1):
        self.done += count
        now = time_lib.perf_counter()
        if self.enabled and (now - self._last_draw >= self.interval or self.done >= self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now):
        self._drawn = self.done
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = _clock(left) if math.isfinite(left) else "?"
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} slices  "
                          f"{rate:.2f} slices/s  ETA {eta}  ")
        self.stream.flush()

    def close(self):
        if self.enabled:
            if self._drawn != self.done:
                self._draw(time_lib.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    @property
    def seconds(self):
        return time_lib.perf_counter() - self.start


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
