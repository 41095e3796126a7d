"""The progress line a benchmark run writes on stderr."""
from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """One progress line on stderr, rewritten in place on a terminal."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.inplace = hasattr(self.stream, "isatty") and self.stream.isatty()

    def show(self, text):
        self.done += 1
        line = f"[{self.done}/{self.total}] {text}"
        if self.inplace:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.inplace:
            self.stream.write("\r\033[K")
            self.stream.flush()
