"""A process of simulated devices: ``python -m tools.simulate.worker SPEC.json``.

Reads a :class:`~tools.simulate.spec.WorkerSpec` (JSON), gives every device its own MQTT connection
(:class:`~edge_client.transport.MqttTransport`, the project's paho adapter, with the
device's offline presence as Last Will) and drives all devices from one thread that
sweeps their inboxes, so a few processes hold a thousand devices. Events are appended
to ``spec.events`` as JSON lines; the first is ``{"event": "ready"}``, written once every
device is connected, subscribed and has published its presence. SIGTERM stops the
worker; devices then say goodbye (offline presence, DISCONNECT).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from edge_client.errors import FedgeError
from edge_client.protocol import Topics
from edge_client.transport import BrokerConfig, Message, MqttTransport, Will
from tools.simulate.device import (
    DeviceSpec,
    SimDevice,
    Source,
    UpdateSource,
    presence,
    subscriptions,
)
from tools.simulate.spec import WorkerSpec
from tools.simulate.trained import GlobalFeed, TrainingSource

log = logging.getLogger(__name__)
IDLE_S = 0.002  # a sweep that found nothing to do sleeps this long
CONNECT_TIMEOUT_S = 30.0


class MqttLink:
    """A device's MQTT connection that can crash and come back (implements ``Link``)."""

    def __init__(self, config: BrokerConfig, filters: list[str]) -> None:
        self._config, self._filters = config, filters
        self.hooks: list[Callable[[], None]] = []  # called on every connect
        self._t: MqttTransport | None = None

    def connect(self) -> None:
        """Connects, waits for the CONNACK and every SUBACK."""
        t = MqttTransport(self._config)
        t.on_connect_hooks.extend(self.hooks)
        t.start(wait=CONNECT_TIMEOUT_S)
        for f in self._filters:
            t.subscribe(f)
        self._t = t

    def _live(self) -> MqttTransport:
        if self._t is None:
            raise FedgeError(f"{self._config.client_id} is not connected")
        return self._t

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribes (also after reconnects)."""
        self._live().subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        """Unsubscribes."""
        self._live().unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                timeout: float | None = 30.0) -> None:
        """Publishes through the live connection."""
        self._live().publish(topic, payload, qos=qos, retain=retain, timeout=timeout)

    def get(self, timeout: float | None) -> Message | None:
        """The next message, or None."""
        return None if self._t is None else self._t.get(timeout)

    def ack(self, message: Message) -> None:
        """Messages are acknowledged automatically."""

    def crash(self) -> None:
        """Stops the network thread without DISCONNECT and drops the socket."""
        if self._t is not None:
            self._t.stop(graceful=False)
            self._t = None
            gc.collect()  # paho closes the socket when its client object is collected

    def reconnect(self) -> None:
        """A new connection under the same client id (the durable session resumes)."""
        self.connect()

    def close(self, goodbye: bytes, topic: str) -> None:
        """Publishes ``goodbye`` (retained) and disconnects gracefully."""
        if self._t is not None:
            with contextlib.suppress(FedgeError):
                self._t.publish(topic, goodbye, retain=True, timeout=5.0)
            self._t.stop()
            self._t = None


class EventWriter:
    """Appends events as JSON lines, from any thread."""

    def __init__(self, out: IO[str]) -> None:
        self._out, self._lock = out, threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def training_source(spec: WorkerSpec, topics: Topics) -> tuple[TrainingSource, MqttTransport]:
    """``--train``: this worker's devices' shards, one interpreter, and the weights feed."""
    from tools.simulate.shards import fleet_data  # only --train loads a dataset

    assert spec.dataset is not None and spec.model_file is not None
    data = fleet_data(spec.dataset, spec.fleet_size, spec.seed)
    feed_t = MqttTransport(BrokerConfig(url=spec.broker, client_id=f"feed-{spec.devices[0][0]}",
                                        mqtt_version=spec.mqtt_version, durable=False))
    feed_t.start(wait=CONNECT_TIMEOUT_S)
    shards = {index: data.shards[index] for _, index, _ in spec.devices}
    source = TrainingSource(Path(spec.model_file).read_bytes(), GlobalFeed(feed_t, topics),
                            shards, spec.seed)
    return source, feed_t


def build_devices(spec: WorkerSpec, report: EventWriter, source: Source
                  ) -> list[tuple[SimDevice, MqttLink]]:
    """One device and link per ``spec.devices`` entry (not connected yet)."""
    topics = Topics(spec.federation, spec.prefix)
    floor = Topics(spec.floor_federation, spec.prefix) if spec.floor_federation else None
    made = []
    for client_id, index, samples in spec.devices:
        dspec = DeviceSpec(client_id, index, samples, topics, spec.faults, spec.seed,
                           spec.max_payload, floor, spec.resend_after)
        will = Will(topics.presence(client_id), presence(dspec, False, time.time()))
        link = MqttLink(BrokerConfig(url=spec.broker, client_id=client_id,
                                     mqtt_version=spec.mqtt_version, will=will),
                        subscriptions(dspec))
        device = SimDevice(dspec, link, source, report)
        link.hooks.append(device.announce.set)
        made.append((device, link))
    return made


def drive(devices: Sequence[SimDevice], stop: threading.Event, report: EventWriter,
          feed: GlobalFeed | None = None) -> None:
    """Sweeps the weights feed and every device until ``stop``; one device's failure is
    reported, not fatal."""
    while not stop.is_set():
        busy = feed.step() if feed is not None else False
        for device in devices:
            try:
                busy = device.step() or busy
            except FedgeError as e:
                report({"event": "error", "client": device.spec.client_id, "error": str(e)})
        if not busy:
            stop.wait(IDLE_S)


def run(spec: WorkerSpec, stop: threading.Event) -> int:
    """Connects every device, reports ready, drives them until ``stop``, says goodbye."""
    with open(spec.events, "a", buffering=1) as out:
        report = EventWriter(out)
        topics = Topics(spec.federation, spec.prefix)
        trainer, feed_t = None, None
        if spec.dataset is not None:
            trainer, feed_t = training_source(spec, topics)
        source: Source = trainer or UpdateSource(spec.shapes, spec.seed)
        pairs = build_devices(spec, report, source)
        for _, link in pairs:
            link.connect()
        report({"event": "ready", "devices": len(pairs),
                "runtime": trainer.model.runtime if trainer else None})
        try:
            drive([d for d, _ in pairs], stop, report, trainer.feed if trainer else None)
        finally:
            if trainer is not None:
                report({"event": "trained", "devices": trainer.trained,
                        "train_s": trainer.train_s})
            if feed_t is not None:
                feed_t.stop()
            with ThreadPoolExecutor(32) as pool:
                for device, link in pairs:
                    pool.submit(link.close, device.presence(False),
                                device.spec.topics.presence(device.spec.client_id))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m tools.simulate.worker SPEC.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return run(WorkerSpec.from_json(args.spec.read_text()), stop)
    except FedgeError as e:
        print(f"sim worker: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
