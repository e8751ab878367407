"""MQTT transport: the only module that imports paho-mqtt.

:class:`MqttTransport` runs all network work on its own thread (so training
never starves keepalive), reconnects with exponential backoff and full jitter,
re-subscribes on every connect, and hands received messages to a queue. It
speaks MQTT 5 (durable session through Session Expiry Interval) or 3.1.1
(``clean_session=False``). With ``manual_ack`` a QoS 1 message is only
acknowledged to the broker when the consumer calls :meth:`ack`, e.g. after it
has persisted the message.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_client.errors import ConfigError, FedgeError

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
_ACKS_KEPT = 4096  # PUBACK outcomes remembered for publishers that wait on them


class TransportError(FedgeError):
    """A publish was refused by the broker or not acknowledged in time."""


@dataclass(frozen=True)
class Will:
    """A Last Will: published by the broker when we vanish without a goodbye."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class BrokerConfig:
    """How to reach and authenticate to a broker.

    Attributes:
        url: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS).
        client_id: the MQTT client id (also the session key of a durable session).
        mqtt_version: ``"5"`` (default) or ``"3.1.1"``.
        durable: keep the broker-side session (subscriptions and unacked
            QoS 1 messages) across disconnects.
        fresh_session: start that session clean on the first connection (a new run, or
            a new client process): whatever an earlier process left queued in it (old
            subscriptions, messages of an earlier run) is dropped; it is durable after.
    """

    url: str
    client_id: str
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    mqtt_version: str = "5"
    keepalive: int = 30
    durable: bool = True
    fresh_session: bool = False
    manual_ack: bool = False
    will: Will | None = None
    backoff_min: float = 0.5
    backoff_max: float = 30.0

    def endpoint(self) -> tuple[str, int, bool]:
        """Returns (host, port, tls) parsed from :attr:`url`.

        Raises:
            ConfigError: the URL is not ``mqtt://host[:port]`` or ``mqtts://host[:port]``.
        """
        u = urlparse(self.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ConfigError(
                f"broker URL {self.url!r}: expected mqtt://host:port or mqtts://host:port"
            )
        tls = u.scheme == "mqtts"
        try:
            port = u.port or (8883 if tls else 1883)
        except ValueError as e:
            raise ConfigError(f"broker URL {self.url!r}: {e}") from None
        return u.hostname, port, tls

    def on_loopback(self, resolve: Callable[[str], list[str]] | None = None) -> bool:
        """Whether the broker is on this machine's loopback interface, so that only
        processes of this machine can reach it (see :func:`is_loopback`).

        Raises:
            ConfigError: the URL is not ``mqtt://host[:port]`` or ``mqtts://host[:port]``.
        """
        return is_loopback(self.endpoint()[0], resolve or resolve_host)


def resolve_host(host: str) -> list[str]:
    """The IP addresses ``host`` resolves to; [] when it does not resolve."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, None)]
    except (OSError, UnicodeError):
        return []


def is_loopback(host: str, resolve: Callable[[str], list[str]] = resolve_host) -> bool:
    """Whether ``host`` is ``localhost``, an address in 127.0.0.0/8 or ``::1``, or a name
    that resolves to such addresses only. A name that does not resolve is not loopback:
    the answer errs on the side that asks for TLS and signing."""
    name = host.rstrip(".").lower()
    if name == "localhost":
        return True
    literal = _loopback_address(name)
    if literal is not None:
        return literal
    addresses = resolve(host)
    return bool(addresses) and all(_loopback_address(a) for a in addresses)


def _loopback_address(text: str) -> bool | None:
    """Whether the IP address ``text`` is a loopback one; None when it is not an address."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0: drop the zone
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1
    return address.is_loopback


@dataclass(frozen=True)
class Message:
    """A message received from the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int


class Transport(Protocol):
    """The port the client and the aggregator talk to (real: MQTT; tests: memory)."""

    def subscribe(self, topic_filter: str, qos: int = 1) -> None: ...
    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        timeout: float | None = 30.0,
    ) -> None: ...
    def unsubscribe(self, topic_filter: str) -> None: ...
    def get(self, timeout: float | None) -> Message | None: ...
    def ack(self, message: Message) -> None: ...


def _no_delay(client: mqtt.Client) -> None:
    """Switches Nagle's algorithm off: paho leaves it on, and a small QoS 1 publish then
    waits for the peer's delayed ACK (about 40 ms) before its PUBACK can come back."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:  # not TCP (e.g. a websocket or unix transport)
            log.debug("TCP_NODELAY not set: %s", e)


class MqttTransport:
    """A paho-mqtt client on its own network thread. See the module docstring."""

    def __init__(self, config: BrokerConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.host, self.port, self.tls = config.endpoint()
        self._rng = rng or random.Random()
        self._filters: dict[str, int] = {}
        self._inbox: queue.Queue[Message] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()  # set while the connection is down
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_connect = True
        self._lock = threading.Lock()
        self._suback = threading.Condition(self._lock)
        self._pubacks = threading.Condition(threading.Lock())
        self._acked: dict[int, str | None] = {}
        self._drops = 0  # connections lost so far: a publish waiting for its ack stops waiting
        self._pending_subs: set[int] = set()
        self._epoch = 0  # connections made so far; on_connect re-subscribes every filter
        self.on_connect_hooks: list[Callable[[], None]] = []
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = self.config
        v5 = c.mqtt_version == "5"
        if c.mqtt_version not in ("5", "3.1.1"):
            raise ConfigError(f"--mqtt-version {c.mqtt_version!r}: expected 5 or 3.1.1")
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=c.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not c.durable,
            manual_ack=c.manual_ack,
        )
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(100)
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        if self.tls:
            self._set_tls(client)
        if c.will is not None:
            client.will_set(c.will.topic, c.will.payload, qos=c.will.qos, retain=c.will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        # Every socket write happens on the network thread: without this paho writes a
        # publish or an ack from the caller's thread while the network thread reads, and
        # over TLS the two threads corrupt the stream ("bad record mac").
        client.on_socket_register_write = lambda *_: None
        return client

    def _set_tls(self, client: mqtt.Client) -> None:
        c = self.config
        for name, path in (("--ca", c.ca), ("--cert", c.cert), ("--key", c.key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path}: no such file")
        client.tls_set(
            ca_certs=str(c.ca) if c.ca else None,
            certfile=str(c.cert) if c.cert else None,
            keyfile=str(c.key) if c.key else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )

    # -- network thread ---------------------------------------------------
    def start(self, wait: float | None = None) -> MqttTransport:
        """Starts the network thread; optionally waits up to ``wait`` s for a connection.

        Raises:
            TransportError: ``wait`` was given and no connection was made in time.
        """
        self._thread = threading.Thread(target=self._run, name="mqtt-net", daemon=True)
        self._thread.start()
        if wait is not None and not self.connected.wait(wait):
            raise TransportError(
                f"could not connect to {self.config.url} within {wait}s "
                "(is the broker running and reachable?)"
            )
        return self

    def _connect_once(self) -> None:
        c = self.config
        if c.mqtt_version == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S if c.durable else 0
            if c.fresh_session and c.durable:
                self._drop_session()
            clean = not c.durable  # a durable session must never be cleaned
            self._client.connect(
                self.host, self.port, c.keepalive, clean_start=clean, properties=props
            )
        else:
            if c.fresh_session and c.durable:
                self._drop_session()
            self._client.connect(self.host, self.port, c.keepalive)

    def _drop_session(self) -> None:
        """A clean, non-persistent connection with the same client id, then disconnect:
        the broker deletes the old session, and the durable connection that follows
        starts a new one. (A clean start on the durable connection itself is not kept by
        Mosquitto 2.0 across its own restart.)"""
        c = self.config
        v5 = c.mqtt_version == "5"
        cleaner = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                              client_id=c.client_id,
                              protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                              clean_session=None if v5 else True)
        if c.username is not None:
            cleaner.username_pw_set(c.username, c.password)
        if self.tls:
            self._set_tls(cleaner)
        if v5:
            cleaner.connect(self.host, self.port, c.keepalive, clean_start=True)
        else:
            cleaner.connect(self.host, self.port, c.keepalive)
        cleaner.loop_start()
        try:
            deadline = time.monotonic() + 10.0
            while not cleaner.is_connected() and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            cleaner.disconnect()
            cleaner.loop_stop()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._first_connect:
                    self._connect_once()
                    self._first_connect = False
                else:
                    self._client.reconnect()
            except (OSError, ssl.SSLError) as e:
                attempt += 1
                log.warning("connect to %s failed (%s); retrying", self.config.url, e)
                self._stop.wait(self._backoff(attempt))
                continue
            while not self._stop.is_set():
                rc = self._client.loop(timeout=0.2)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                if self.connected.is_set():
                    attempt = 0
            if not self._stop.is_set():
                attempt += 1
                self._stop.wait(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter (AWS architecture blog style)."""
        cap = min(self.config.backoff_max, self.config.backoff_min * 2 ** min(attempt, 20))
        return self._rng.uniform(self.config.backoff_min / 2, cap)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.config.url, reason_code)
            return
        _no_delay(client)
        with self._suback:
            filters = list(self._filters.items())
            self._epoch += 1
            self._suback.notify_all()  # a SUBSCRIBE sent on the old connection is moot
        for f, qos in filters:
            client.subscribe(f, qos=qos)
        log.info("connected to %s as %s (session present: %s)", self.config.url,
                 self.config.client_id, flags.session_present)
        self.disconnected.clear()
        self.connected.set()
        for hook in list(self.on_connect_hooks):
            hook()

    def _on_disconnect(self, client: mqtt.Client, userdata: object,
                       flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self.connected.clear()
        self.disconnected.set()
        with self._pubacks:  # no PUBACK comes over a lost connection: wake the waiters
            self._drops += 1
            self._pubacks.notify_all()
        if not self._stop.is_set():
            log.warning("disconnected from %s: %s", self.config.url, reason_code)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        for rc in reason_codes:
            if rc.is_failure:
                log.error("broker refused a subscription: %s", rc)
        with self._suback:
            self._pending_subs.discard(mid)
            self._suback.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid))

    # -- the port ---------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int = 1, *, wait: float | None = 10.0) -> None:
        """Subscribes now (if connected) and again after every reconnect.

        When connected, waits up to ``wait`` seconds for the broker's SUBACK so
        that messages published afterwards are sure to reach us.
        """
        with self._lock:
            self._filters[topic_filter] = qos
        if not self.connected.is_set():
            return
        with self._suback:
            rc, mid = self._client.subscribe(topic_filter, qos=qos)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None or wait is None:
                return
            self._pending_subs.add(mid)
            epoch = self._epoch
            if not self._suback.wait_for(
                    lambda: mid not in self._pending_subs or self._epoch != epoch, wait):
                raise TransportError(f"no SUBACK for {topic_filter} within {wait}s")
            self._pending_subs.discard(mid)

    def unsubscribe(self, topic_filter: str) -> None:
        """Stops receiving ``topic_filter`` (now and after reconnects)."""
        with self._lock:
            self._filters.pop(topic_filter, None)
        if self.connected.is_set():
            self._client.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                timeout: float | None = 30.0) -> None:
        """Publishes and, for QoS ≥ 1, waits for the broker's acknowledgement.

        A QoS 1 publish made while disconnected is queued by paho and sent after the
        reconnect; with a ``timeout`` it also raises at once, so the caller knows.

        Raises:
            TransportError: not connected, or the connection dropped before the
                acknowledgement (the message is queued), refused by the broker (e.g. an
                ACL: PUBACK reason 135), or not acknowledged within ``timeout`` seconds (it
                stays queued for a later reconnect).
        """
        with self._pubacks:
            drops = self._drops
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if qos == 0 or timeout is None:
            return
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            raise TransportError(f"publish to {topic}: not connected to {self.config.url}; "
                                 "queued, it is sent after the reconnect")
        # Our own record of PUBACKs, by message id: paho's wait_for_publish() reports a
        # PUBACK that refuses the message (e.g. an ACL, reason 135) as a success.
        with self._pubacks:
            if not self._pubacks.wait_for(
                    lambda: info.mid in self._acked or self._drops != drops, timeout):
                raise TransportError(
                    f"publish to {topic} not acknowledged within {timeout}s "
                    "(it stays queued and is sent after a reconnect)")
            if info.mid not in self._acked:
                raise TransportError(
                    f"publish to {topic}: the connection to {self.config.url} dropped before "
                    "its acknowledgement; queued, it is sent after the reconnect")
            reason = self._acked.pop(info.mid)
        if reason is not None:
            raise TransportError(f"publish to {topic} refused by the broker: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        with self._pubacks:
            self._acked[mid] = str(reason_code) if reason_code.is_failure else None
            while len(self._acked) > _ACKS_KEPT:  # acks nobody waits for (timeout=None)
                self._acked.pop(next(iter(self._acked)))
            self._pubacks.notify_all()

    def get(self, timeout: float | None) -> Message | None:
        """Returns the next received message, or None after ``timeout`` seconds."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def ack(self, message: Message) -> None:
        """Acknowledges a QoS 1 message received with ``manual_ack``."""
        if self.config.manual_ack and message.qos > 0:
            self._client.ack(message.mid, message.qos)

    def stop(self, *, graceful: bool = True) -> None:
        """Disconnects (a graceful disconnect suppresses the Last Will) and joins the thread."""
        self._stop.set()
        if graceful:
            self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.loop(timeout=0.1)
        self.connected.clear()
