"""A progress bar for waiting on a job: tqdm when installed (its notebook widget when ipywidgets is
there too), else a plain text bar on stderr."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Bar(Protocol):
    def update(self, fraction: float, status: str) -> None: ...
    def close(self) -> None: ...


class TqdmBar:
    def __init__(self, desc: str) -> None:
        try:
            import ipywidgets  # noqa: F401  (tqdm.auto wants it for its notebook widget)
            from tqdm.auto import tqdm
        except ImportError:
            from tqdm import tqdm
        self._bar: Any = tqdm(total=100, desc=desc, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}{postfix}]")
        self._shown: tuple[float, str] | None = None

    def update(self, fraction: float, status: str) -> None:
        shown = (round(min(max(fraction, 0.0), 1.0) * 100), status)
        if shown == self._shown:  # a notebook keeps every refresh: only changes are drawn
            return
        self._shown = shown
        self._bar.n = shown[0]
        self._bar.set_postfix_str(status, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


class TextBar:
    WIDTH = 30

    def __init__(self, desc: str, stream: Any = None) -> None:
        self.desc, self.stream, self.last = desc, stream or sys.stderr, ""

    def update(self, fraction: float, status: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        filled = round(fraction * self.WIDTH)
        line = f"{self.desc} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:5.1f}% {status}"
        if line != self.last:
            self.stream.write("\r" + line)
            self.stream.flush()
            self.last = line

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class NoBar:
    def update(self, fraction: float, status: str) -> None:
        pass

    def close(self) -> None:
        pass


def make_bar(desc: str, enabled: bool) -> Bar:
    if not enabled:
        return NoBar()
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return TextBar(desc)
    return TqdmBar(desc)
