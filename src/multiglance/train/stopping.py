"""SIGINT / SIGTERM during training: finish the current step, checkpoint, stop (a second signal stops at once).

    with StopSignal() as stop:          # handlers installed; the previous ones restored on the way out
        ...                             # after a step: stop.agree(world, device) -> the signal, or 0
        raise stop.stopped(step)        # the `Stopped` the CLI turns into exit code 130 / 143

Under DDP a signal reaches each process at its own moment (or only one of them): `agree` takes the signal any
process received, in every process, so that all stop after the same step and none waits for the others in
the next all-reduce. See docs/RELIABILITY.md.
"""
from __future__ import annotations

import signal

from ..errors import Stopped
from .distributed import over_ranks


class StopSignal:
    """The first SIGINT or SIGTERM received (`number`, 0: none yet), while the handlers are installed."""

    def __init__(self):
        self.number = 0
        self._previous: dict = {}

    def __enter__(self) -> StopSignal:
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: no handlers, a signal acts as it would without them
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    def _handle(self, signum, frame) -> None:
        if self.number:
            raise KeyboardInterrupt
        self.number = signum

    def agree(self, world: int, device: str, *more: float) -> list[float]:
        """After a step: every process takes the signal any of them received (one all-reduce, maximising it
        and `more`, which come back maximised too); in one process nothing is exchanged."""
        number, *more = over_ranks([float(self.number), *more], world, device, op="max")
        self.number = int(number)
        return [self.number, *more]

    def stopped(self, step: int) -> Stopped:
        name = signal.Signals(self.number).name
        return Stopped(f"stopped by {name} at step {step}; the checkpoint is saved, continue with --resume",
                       128 + self.number)
