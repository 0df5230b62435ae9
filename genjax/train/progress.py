"""Trainer progress: a live bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Step, loss, tokens/s, MFU and ETA; rates exclude the first (compiling) step."""

    def __init__(self, total_steps: int, start_step: int, tokens_per_step: int,
                 flops_per_step: float, peak_flops_total: float, mode: str = "auto",
                 every: int = 10, stream=None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode, self.every = mode, max(every, 1)
        self.total, self.start = total_steps, start_step
        self.tokens_per_step, self.flops_per_step = tokens_per_step, flops_per_step
        self.peak = peak_flops_total
        self._t0: float | None = None
        self._s0 = start_step

    def update(self, step: int, loss: float) -> None:
        """Called with each finished step's host-side metrics (step is 0-based)."""
        now = time.perf_counter()
        if self._t0 is None:  # first finished step includes compilation: start the clock here
            self._t0, self._s0 = now, step
        done = step - self._s0
        elapsed = now - self._t0
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        tok_s = rate * self.tokens_per_step
        mfu = rate * self.flops_per_step / self.peak if self.peak else 0.0
        eta = (self.total - step - 1) / rate if rate else float("nan")
        eta_s = _fmt_duration(eta) if rate else "--:--"
        line = (f"step {step + 1:>6}/{self.total}  loss {loss:7.4f}  {tok_s:9.0f} tok/s  "
                f"MFU {100 * mfu:5.1f}%  ETA {eta_s}")
        if self.mode == "bar":
            width = 24
            filled = int(width * (step + 1) / self.total)
            self.stream.write("\r[" + "#" * filled + "." * (width - filled) + "] " + line)
            self.stream.flush()
        elif self.mode == "lines" and ((step + 1) % self.every == 0 or step + 1 == self.total):
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
        if self.mode != "none":
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()
