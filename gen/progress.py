"""Progress of long commands: a tqdm bar on a terminal, plain lines when output is not one.

Every long ``lutra`` command (build, bench, sim --all-configs, soak, explore) reports through
:class:`Progress`, on stderr so that stdout keeps the results. On a terminal it is one live
line (tqdm): a bar when the number of items is known, else the current step and the time so
far. Elsewhere (CI logs, pipes) it prints a plain line when a step starts or an item is done,
and a heartbeat line while a step runs longer than ``interval`` seconds. A command that ends
before printing anything prints nothing more (no closing line).
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``42.1 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Progress of one command: named steps, or ``total`` counted items.

    Parameters
    ----------
    title : str
        What runs, e.g. ``"lutra build gemm"``; starts every plain line.
    total : int or None
        Number of items, for a bar and an estimate of the time left; ``None``: steps only.
    stream : file or None
        Where to write (default ``sys.stderr``).
    tty : bool or None
        Force the terminal (``True``) or plain (``False``) form; default: ``stream.isatty()``.
    interval : float
        Seconds between heartbeat lines while nothing else is printed (plain form only).
    """

    def __init__(self, title: str, *, total: int | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, interval: float = 30.0) -> None:
        if total is not None and (not isinstance(total, int) or total < 0):
            raise ValueError(f"total must be a non-negative integer or None, not {total!r}")
        self._title = title
        self._total = total
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = interval
        self._start = time.monotonic()
        self._last_line = self._start
        self._step: str | None = None
        self._step_start = self._start
        self._done = 0
        self._status = ""
        self._printed = False           # plain form: whether any line was written
        self._lock = threading.RLock()
        self._bar = None
        if self._tty:
            from tqdm import tqdm
            form = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                    "[{elapsed}<{remaining}]{postfix}") if total is not None \
                else "{desc} [{elapsed}]{postfix}"
            self._bar = tqdm(total=total, desc=title, file=self._stream, bar_format=form,
                             dynamic_ncols=True, leave=True)

    # ---- what callers report --------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since the command started."""
        return time.monotonic() - self._start

    def eta(self) -> float | None:
        """Seconds left at the mean rate so far (``None`` before the first item or without a
        total)."""
        if self._total is None or self._done == 0:
            return None
        return self.elapsed / self._done * max(self._total - self._done, 0)

    def step(self, name: str) -> None:
        """A new step starts (``"synthesis"``, ``"placement"``, ...)."""
        with self._lock:
            if name == self._step:
                return
            self._step, self._step_start = name, time.monotonic()
            if self._bar is not None:
                self._bar.set_description_str(f"{self._title}: {name}", refresh=True)
            else:
                self._line(f"{name} ({format_seconds(self.elapsed)} so far)")

    def advance(self, n: int = 1, status: str = "") -> None:
        """``n`` more items are done; ``status`` (e.g. the item's result) goes beside them."""
        with self._lock:
            self._done += n
            self._status = status
            if self._bar is not None:
                self._bar.set_postfix_str(status, refresh=False)
                self._bar.update(n)
            else:
                self._line(self._count() + (f": {status}" if status else ""))

    def status(self, status: str) -> None:
        """Replace the status text (counts, best so far) without counting an item."""
        with self._lock:
            self._status = status
            if self._bar is not None:
                self._bar.set_postfix_str(status, refresh=True)

    def tick(self) -> None:
        """Refresh the time shown; in the plain form, a heartbeat line every ``interval``."""
        with self._lock:
            if self._bar is not None:
                self._bar.refresh()
            elif time.monotonic() - self._last_line >= self._interval:
                what = self._step or (self._count() if self._total is not None else "")
                self._line((f"{what}, " if what else "")
                           + f"still running ({format_seconds(self.elapsed)} so far)"
                           + (f"; {self._status}" if self._status else ""))

    @contextmanager
    def ticking(self, every: float = 1.0):
        """Call :meth:`tick` from a background thread while the ``with`` body runs (for a call
        that reports nothing itself)."""
        stop = threading.Event()

        def run():
            while not stop.wait(every):
                self.tick()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def close(self, message: str = "done") -> None:
        """End the progress display with ``message`` and the total time."""
        with self._lock:
            if self._bar is not None:
                self._bar.set_description_str(f"{self._title}: {message}", refresh=False)
                self._bar.close()
                self._bar = None
            elif self._stream is not None and self._printed:
                self._line(f"{message} in {format_seconds(self.elapsed)}")
            self._stream = None

    def __enter__(self) -> Progress:
        # On a terminal, lines the command prints while the bar is shown go above the bar.
        self._stdout = None
        if self._bar is not None and sys.stdout.isatty():
            self._stdout, sys.stdout = sys.stdout, _Above(sys.stdout, self._bar)
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if self._stdout is not None:
            sys.stdout.finish()
            sys.stdout, self._stdout = self._stdout, None
        self.close("done" if kind is None else "stopped")
        return False

    # ---- plain lines ----------------------------------------------------------------------

    def _count(self) -> str:
        if self._total is None:
            return f"{self._done} done"
        text = f"{self._done}/{self._total} done, {format_seconds(self.elapsed)} elapsed"
        eta = self.eta()
        return text + (f", about {format_seconds(eta)} left" if eta is not None else "")

    def _line(self, text: str) -> None:
        if self._stream is None:
            return
        self._stream.write(f"{self._title}: {text}\n")
        self._stream.flush()
        self._last_line = time.monotonic()
        self._printed = True


class _Above:
    """A stdout that writes whole lines above a tqdm bar (clearing and redrawing it)."""

    def __init__(self, stream: TextIO, bar) -> None:
        self._stream, self._bar, self._pending = stream, bar, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            with self._bar.external_write_mode(file=self._bar.fp):
                self._stream.write(lines + "\n")
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def finish(self) -> None:
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def __getattr__(self, name):
        return getattr(self._stream, name)
