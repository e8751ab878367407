"""The aggregator with stage timers: ``python -m tools.sim_stages OUT.json -- AGGREGATOR-ARGS``.

Runs ``fedge-aggregator`` in this process after wrapping some of its functions with
wall-clock timers (:data:`STAGES`: decoding, reassembly, validation, storage, folding,
replies, aggregation, publishing, and the wait for messages); no code in ``aggregator/``
changes. Only calls made on the service's worker (the main thread) are timed, and
times are **exclusive** (a timed call inside another timed call is subtracted from the
outer one), so per round they add up to the worker's wall time. A round's window runs
from the start of its announcement to the end of its aggregation (the new manifest is
published by then); the totals of every window are written to OUT.json at exit, with
the stages that could not be found (renamed code) listed under ``missing``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: (label, module, attribute): "Class.method" or a module-level name (patched where used).
STAGES: tuple[tuple[str, str, str], ...] = (
    ("wait for messages", "edge_client.transport", "MqttTransport.get"),
    ("chunk decode", "edge_client.protocol", "Chunk.decode"),
    ("reassembly + SHA-256", "edge_client.transfer", "Reassembler.accept"),
    ("update decode", "edge_client.protocol", "Update.decode"),
    ("dequantize", "aggregator.intake", "dequantize_update"),
    ("validation", "aggregator.inbox", "validate"),
    ("store update (fsync)", "aggregator.store", "AggregatorStore.save_accepted"),
    ("round machine", "aggregator.rounds", "step"),
    ("save round.json (fsync)", "aggregator.store", "AggregatorStore.save_round_state"),
    ("fold into running sum", "aggregator.ledger", "RoundLedger.fold"),
    ("reply publish (waits PUBACK)", "aggregator.publish", "Publisher.reply"),
    ("aggregate", "aggregator.ledger", "RoundLedger.delta"),
    ("aggregate", "aggregator.fedavg", "Strategy.apply"),
    ("encode global weights", "aggregator.checkpoint", "GlobalModel.build"),
    ("save checkpoint (fsync)", "aggregator.checkpoint", "GlobalModel.save"),
    ("publish weights + manifest", "aggregator.publish", "Publisher.weights"),
    ("publish weights + manifest", "aggregator.publish", "Publisher.manifest"),
    ("clear old weights", "aggregator.publish", "Publisher.clear_weights"),
    ("clear old weights", "aggregator.store", "AggregatorStore.checkpoint"),
    ("publish round", "aggregator.publish", "Publisher.round"),
    ("history line (fsync)", "aggregator.store", "AggregatorStore.append_history"),
    ("other service code", "aggregator.service", "AggregatorService.handle"),
    ("other service code", "aggregator.service", "AggregatorService.tick"),
)
NO_DELAY_ENV = "FEDGE_BENCH_TCP_NODELAY"
WINDOW_OPEN = ("aggregator.service", "AggregatorService._announce")
WINDOW_CLOSE = ("aggregator.service", "AggregatorService._aggregate")


class StageClock:
    """Exclusive wall time per stage, totalled per round window."""

    def __init__(self) -> None:
        self.windows: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._stack: list[list[float]] = []  # child time of each active timed call

    def timed(self, label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` with its exclusive time added to ``label`` (main thread only)."""

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return func(*args, **kwargs)
            frame = [0.0]
            self._stack.append(frame)
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self._stack.pop()
                if self._stack:
                    self._stack[-1][0] += spent
                self._add(label, spent - frame[0])

        return wrapper

    def _add(self, label: str, seconds: float) -> None:
        if self._open is not None:
            self._open["stages"][label] += seconds
            self._open["calls"][label] += 1

    def window(self, func: Callable[..., Any], *, opens: bool) -> Callable[..., Any]:
        """``func`` opening (before it runs) or closing (after it returns) a round window."""

        @functools.wraps(func)
        def wrapper(service: Any, action: Any, *args: Any, **kwargs: Any) -> Any:
            if opens:
                self._open = {"round": int(action.round_id), "start": time.perf_counter(),
                              "stages": Counter(), "calls": Counter()}
            result = func(service, action, *args, **kwargs)
            if not opens and self._open is not None:
                self._open["seconds"] = time.perf_counter() - self._open.pop("start")
                self.windows.append(self._open)
                self._open = None
            return result

        return wrapper


def _resolve(module: str, attribute: str) -> tuple[Any, str, Any]:
    """(owner, name, raw attribute) of ``module.attribute``; raises AttributeError."""
    owner: Any = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name, inspect.getattr_static(owner, name)


def instrument(clock: StageClock) -> list[str]:
    """Wraps every stage and the window markers; returns the stages not found."""
    missing = []
    for label, module, attribute in STAGES:
        try:
            owner, name, raw = _resolve(module, attribute)
        except (AttributeError, ImportError):
            missing.append(f"{module}.{attribute}")
            continue
        if isinstance(raw, classmethod):
            setattr(owner, name, classmethod(clock.timed(label, raw.__func__)))
        elif isinstance(raw, staticmethod):
            setattr(owner, name, staticmethod(clock.timed(label, raw.__func__)))
        else:
            setattr(owner, name, clock.timed(label, raw))
    for (module, attribute), opens in ((WINDOW_OPEN, True), (WINDOW_CLOSE, False)):
        owner, name, raw = _resolve(module, attribute)  # without them nothing is measured
        setattr(owner, name, clock.window(raw, opens=opens))
    return missing


def _no_delay() -> None:
    """Experiment: TCP_NODELAY on the aggregator's MQTT socket (paho leaves Nagle on)."""
    plain = socket.create_connection

    def connect(*args: Any, **kwargs: Any) -> socket.socket:
        sock = plain(*args, **kwargs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    socket.create_connection = connect


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the aggregator with timers; writes the round windows to the first argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[1] != "--":
        print("usage: python -m tools.sim_stages OUT.json -- AGGREGATOR-ARGS", file=sys.stderr)
        return 2
    out, aggregator_args = Path(args[0]), args[2:]
    clock = StageClock()
    missing = instrument(clock)
    if os.environ.get(NO_DELAY_ENV) == "1":
        _no_delay()
    from aggregator.__main__ import main as aggregator_main

    try:
        return aggregator_main(aggregator_args)
    finally:
        out.write_text(json.dumps({"windows": clock.windows, "missing": missing}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
