"""Third-party chatter, silenced unless ``--verbose``: the one place that knows what it looks like.

Python loggers of TensorFlow and absl go to WARNING (:func:`quiet_loggers`); those of the
embedded amqtt broker and its state machine (transitions) show only CRITICAL: amqtt logs
its configuration keys as deprecated and, at ERROR with a traceback, every QoS 1 message it
could not deliver to a client that has left, which fedge's own checks report where it
matters (a round that fails). TensorFlow's and TFLite's native code writes to descriptor 2
itself: absl's C++ logging ignores ``TF_CPP_MIN_LOG_LEVEL`` before ``absl::InitializeLog()``
(TensorFlow 2.1x prints its oneDNN banner that way), TFLite prints "INFO: Created TensorFlow
Lite XNNPACK delegate", the converter "fully_quantize: ...". So
:func:`filtered_native_stderr` points descriptor 2 at a pipe whose reader drops exactly those
lines (:data:`NATIVE_CHATTER`) and passes every other byte on to the real stderr, while
Python's ``sys.stderr`` (progress bars, log records, errors) writes to the real stderr
directly. Switches that change numerics (``TF_ENABLE_ONEDNN_OPTS``) are left alone: only
the messages go.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

#: one line of native start-up or conversion chatter (without its newline)
NATIVE_CHATTER = re.compile(
    rb"(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    rb"STDERR"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] .*"  # absl C++ INFO and WARNING
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] \S+:\d+\] .*"  # TensorFlow's older format
    rb"|To enable the following instructions: .*, in other operations, rebuild TensorFlow "
    rb"with the appropriate compiler flags\."  # the second line of the CPU-feature banner
    rb"|INFO: .*"  # TFLite's own INFO lines (the XNNPACK delegate)
    rb"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    rb"output_inference_type: \w+)\r?"
)
#: Python loggers whose lines below these levels are start-up or state-machine chatter
QUIET_LOGGERS = {"tensorflow": logging.WARNING, "absl": logging.WARNING,
                 "matplotlib": logging.WARNING, "h5py": logging.WARNING,
                 "amqtt": logging.CRITICAL, "transitions": logging.CRITICAL}
_JOIN_TIMEOUT = 2.0  # seconds to wait for the last native lines after the command


def quiet_loggers() -> None:
    """Sets the chatty third-party Python loggers to the levels of :data:`QUIET_LOGGERS`."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _forward(source: int, sink: int) -> None:
    """Copies ``source`` to ``sink`` line by line, without the chatter, until end of file."""
    pending = b""
    with open(source, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line for line in lines if not NATIVE_CHATTER.fullmatch(line)]
            if kept:
                _write_all(sink, b"\n".join(kept) + b"\n")
    if pending and not NATIVE_CHATTER.fullmatch(pending):
        _write_all(sink, pending)


def _python_stderr_on(fd: int) -> io.TextIOWrapper | None:
    """A text stream on ``fd`` to replace ``sys.stderr`` when that writes to descriptor 2."""
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):  # replaced, e.g. by a test's capture
        return None
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=sys.stderr.encoding,
                            errors="backslashreplace", line_buffering=True)  # a line: one write


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Within the block, native writes to descriptor 2 lose their chatter (see the module
    docstring); everything else reaches the real stderr as it comes."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    saved, rebound = sys.stderr, _python_stderr_on(real)
    if rebound is not None:
        sys.stderr = rebound
    forwarder = threading.Thread(target=_forward, args=(read_end, real), daemon=True,
                                 name="native-stderr")
    forwarder.start()
    try:
        yield
    finally:
        if rebound is not None:
            rebound.flush()
            sys.stderr = saved
        os.dup2(real, 2)  # the pipe's last write end closes, so the forwarder sees its end
        forwarder.join(_JOIN_TIMEOUT)
        if rebound is None and not forwarder.is_alive():
            os.close(real)  # else a log handler or a child process may still write to it
