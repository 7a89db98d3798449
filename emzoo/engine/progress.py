"""The progress the volume jobs report on stderr: a tqdm bar on a terminal, plain lines in logs."""

import sys
import time as time_lib

# tqdm's format for both: label, count (in the bar's unit), rate, time left and the job's status.
_BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} UNIT  RATEETA {remaining}{postfix}"
_LINE_FORMAT = "{desc} {n_fmt}/{total_fmt} UNIT ({percentage:.0f}%)  RATEETA {remaining}{postfix}"


def _format(template, unit, show_rate):
    return template.replace("UNIT", unit).replace("RATE", "{rate_noinv_fmt}  " if show_rate else "")


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """Slices (or blocks: ``unit``) done, slices/s and time left, on stderr.

    The rate and the time left count from the first update on: the first slice (or block) also
    pays for loading the model and compiling it, which would make the first estimates far too
    long; until a second update there is no estimate.

    On a terminal this is a tqdm bar redrawn in place. Elsewhere (a log file, a pipe) redraws
    would pile up into one long line, so it writes a plain line every ``log_interval`` seconds,
    and a last one at :meth:`close` if it wrote any and the count or status changed since (short
    jobs write nothing).

    Args:
        total: slices the job writes (or blocks, with ``unit="blocks"``).
        label: what the job is (``upscale``, ``repair``).
        unit: what is counted (plural), ``"slices"`` by default.
        enabled: ``False`` reports nothing (the counts are still kept).
        stream: where to write (default ``sys.stderr``).
        interval: least seconds between two redraws of the bar.
        log_interval: seconds between two plain lines when ``stream`` is not a terminal.
        initial: count already done before this bar (a resumed job).
        show_rate: ``False`` leaves out the rate (e.g. when the count is seconds of a time budget).
        callback: called as ``callback(done, total)`` after every update (e.g. a viewer's
            progress bar), whether or not anything is written.

    :meth:`set_status` adds a short text after the time left (e.g. a training job's best score).

    Example:
        >>> bar = Progress(10, "upscale", enabled=False)
        >>> bar.update(3); bar.done
        3
    """

    def __init__(self, total, label, enabled=True, stream=None, interval=0.25, log_interval=30.0,
                 unit="slices", initial=0, show_rate=True, callback=None):
        self.callback = callback
        self.total, self.label, self.enabled, self.unit = int(total), label, enabled, unit
        self.stream = stream or sys.stderr
        self.interval, self.log_interval = interval, log_interval
        self.done = self._initial = int(initial)
        self.status = ""
        self.start = time_lib.perf_counter()
        self._bar = None
        self._last_line = self.start
        self._lines = 0
        self._last_written = None  # (count, status) of the last plain line
        self._rate_from = None  # (time, count) of the first update: the rate counts from there
        self._line_format = _format(_LINE_FORMAT, unit, show_rate)
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=label, file=self.stream, unit=" " + unit,
                             initial=self.done, mininterval=interval,
                             bar_format=_format(_BAR_FORMAT, unit, show_rate),
                             dynamic_ncols=True, leave=True, smoothing=0)

    def set_status(self, text):
        """Shows ``text`` after the time left, from the next redraw or line on."""
        self.status = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def update(self, count=1):
        self.done += count
        now = time_lib.perf_counter()
        first = self._rate_from is None
        if first:
            self._rate_from = (now, self.done)
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self._bar is not None:
            if first:   # tqdm's average rate (smoothing=0) counts from its reset: from here
                self._bar.reset()
                self._bar.n = self._bar.initial = self.done
                self._bar.refresh()
            else:
                self._bar.update(count)
        elif self.enabled:
            if now - self._last_line >= self.log_interval and self.done < self.total:
                self._write_line(now)

    def _write_line(self, now):
        from tqdm import tqdm

        self._last_line = now
        self._lines += 1
        self._last_written = (self.done, self.status)
        since, counted = self._rate_from or (self.start, self._initial)
        text = tqdm.format_meter(min(self.done, self.total), self.total, now - since,
                                 prefix=self.label, unit=" " + self.unit, postfix=self.status or None,
                                 initial=counted, bar_format=self._line_format)
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._lines and self._last_written != (self.done, self.status):
            self._write_line(time_lib.perf_counter())

    @property
    def seconds(self):
        return time_lib.perf_counter() - self.start


def job_progress(progress, total, label, unit="slices"):
    """The :class:`Progress` of a volume job: ``progress`` ``True`` draws the bar on stderr,
    ``False`` reports nothing, and a callable is called as ``progress(done, total)`` instead.

    Example:
        >>> seen = []
        >>> bar = job_progress(lambda done, total: seen.append((done, total)), 2, "upscale")
        >>> bar.update(); bar.update(); seen
        [(1, 2), (2, 2)]
    """
    if callable(progress):
        return Progress(total, label, enabled=False, unit=unit, callback=progress)
    return Progress(total, label, enabled=bool(progress), unit=unit)
