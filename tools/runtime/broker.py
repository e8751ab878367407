"""Throw-away MQTT brokers for the demo, the simulator, benchmarks and tests.

:class:`MosquittoBroker` runs the real ``mosquitto`` binary on a free
127.0.0.1 port with a generated config; :class:`EmbeddedBroker` runs the
pure-Python ``amqtt`` broker in-process (MQTT 3.1.1 only) for machines that
have no Mosquitto. Both bind to loopback only.

Mosquitto refuses a packet larger than :data:`MAX_PACKET_BYTES` (``max_packet_size``) as
soon as its header says so, and disconnects the sender: without it, one 200 MB publish
was read whole by the broker and delivered to the aggregator, whose memory grew to
711 MB before it could refuse it. amqtt has no such setting; it is a fallback for demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_client.errors import ConfigError
from edge_client.protocol import MAX_CHUNK_BYTES

log = logging.getLogger(__name__)

#: room for everything of a PUBLISH packet but its payload: fixed header (at most 5 bytes),
#: topic (at most 65,537 bytes with its length), packet id and MQTT 5 properties
PACKET_HEADROOM = 128 * 1024


def max_packet_bytes(max_payload: int) -> int:
    """Mosquitto's ``max_packet_size`` for MQTT payloads of up to ``max_payload`` bytes:
    a packet that large still fits with its topic and properties; anything larger is
    refused by its header before the broker reads it."""
    return max_payload + PACKET_HEADROOM


#: the demo and test brokers': fedge's largest payload (a chunk of MAX_CHUNK_BYTES, 8 MiB)
MAX_PACKET_BYTES = max_packet_bytes(MAX_CHUNK_BYTES)


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float,
                  gone: Callable[[], bool] = lambda: False) -> None:
    """Blocks until a TCP connect to ``host:port`` succeeds.

    Raises:
        TimeoutError: nothing accepted connections within ``timeout`` seconds, or
            ``gone()`` says the server process has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline or gone():
                msg = f"no broker listening on {host}:{port} after {timeout}s"
                raise TimeoutError(msg) from None
            time.sleep(0.02)


class MosquittoBroker:
    """A real Mosquitto on a free loopback port, started and stopped by us.

    Args:
        persistence: keep retained messages and durable sessions across
            :meth:`restart` (written to a private temporary directory).
        extra_config: more lines for ``mosquitto.conf`` (e.g. a smaller ``max_packet_size``:
            the last value of a setting wins).
        port: a fixed port; default a free one.
        config_file: run with this config (e.g. from ``fedge provision --port P --bind
            127.0.0.1``) instead of a generated one; its listener must be on ``port``, and
            ``persistence`` and ``extra_config`` are then ignored.
        tls: the listener speaks TLS, so :attr:`url` is ``mqtts://``.
    """

    def __init__(
        self, *, persistence: bool = False, extra_config: str = "", port: int | None = None,
        config_file: Path | None = None, tls: bool = False,
    ) -> None:
        binary = shutil.which("mosquitto") or _sbin("mosquitto")
        if binary is None:
            raise ConfigError(
                "mosquitto is not installed: run `apt-get install -y mosquitto` "
                "(Debian/Ubuntu) or use the embedded broker"
            )
        self.binary = binary
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="fedge-mosquitto-"))
        self._persistence = persistence
        self._extra = extra_config
        self._config_file = config_file
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self._dir / "mosquitto.log"

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT`` (``mqtts://`` with ``tls``)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        if self._config_file is not None:
            return self._config_file
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 0",
            f"max_packet_size {MAX_PACKET_BYTES}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            f"persistence {'true' if self._persistence else 'false'}",
        ]
        if self._persistence:
            lines += [f"persistence_location {self._dir}/", "autosave_interval 1"]
        conf = self._dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n" + self._extra + "\n")
        # mosquitto started as root drops to user `mosquitto`: let it write here.
        with contextlib.suppress(OSError):
            shutil.chown(self._dir, user="mosquitto")
        return conf

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Starts the broker and waits until it accepts connections."""
        conf = self._write_config()
        logf = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=logf, stderr=logf, start_new_session=True
        )
        logf.close()
        proc = self._proc
        try:  # a config error makes mosquitto exit at once: do not wait the full timeout
            wait_for_port("127.0.0.1", self.port, timeout, gone=lambda: proc.poll() is not None)
        except TimeoutError:
            self.stop()
            raise ConfigError(
                f"mosquitto did not start on port {self.port}: {self.log_path.read_text()[-2000:]}"
            ) from None
        return self

    def stop(self) -> None:
        """Stops the broker (SIGTERM, then SIGKILL); persistence is saved on SIGTERM."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Stops and starts the broker on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the broker and removes its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _sbin(name: str) -> str | None:
    for d in ("/usr/sbin", "/usr/local/sbin"):
        p = Path(d) / name
        if p.exists():
            return str(p)
    return None


def mosquitto_available() -> bool:
    """True when a ``mosquitto`` binary is on PATH or in /usr/sbin."""
    return (shutil.which("mosquitto") or _sbin("mosquitto")) is not None


def _amqtt_task_failed(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """amqtt leaves some of its own tasks' failures unretrieved (a PUBACK that never came from
    a client that went away): a debug line, not a traceback in the middle of the demo."""
    log.debug("embedded amqtt: %s: %r", context.get("message"), context.get("exception"))


class EmbeddedBroker:
    """The pure-Python ``amqtt`` broker in a thread of this process (MQTT 3.1.1 only)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Starts amqtt on its own event-loop thread and waits for the port."""
        try:
            from amqtt.broker import Broker
        except ImportError as e:
            raise ConfigError(
                "no MQTT broker: install mosquitto, or `pip install amqtt` for the embedded one"
            ) from e
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        loop = asyncio.new_event_loop()
        self._loop = loop
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(_amqtt_task_failed)
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="amqtt", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise ConfigError("the embedded amqtt broker did not start")
        return self  # Broker.start() returns once its listener is bound: no port probe needed

    def stop(self) -> None:
        """Shuts the broker down and joins its thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    close = stop

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
