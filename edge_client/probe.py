"""The crash-proof first load of a model file: a child process loads it and runs it once.

A model file that passes :func:`~edge_client.model_check.check_model_file` can still
crash the native runtime (a kernel reading a nonsensical option, a runtime bug): a
segfault cannot be caught in the process it happens in. :func:`probe_model` therefore
runs ``python -m edge_client.probe`` with the file on its standard input; the child loads
it as :class:`~edge_client.model.TrainableModel` (one thread) and runs every signature
once on zeros (``infer``, ``get_weights``, ``set_weights``, ``evaluate``, one ``train``
step). A child killed by a signal, out of memory, or refusing the file means the file is
refused; only then does the caller load it in its own process.

Cost: one Python start with numpy and the runtime plus the model's own load and step,
about 0.3 s for a zoo model on a 2-core x86 machine; the edge client pays it once per
model (it remembers the SHA-256 of the model it probed, see :mod:`edge_client.admission`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from edge_client.errors import ConfigError, ModelError
from edge_client.model_check import check_model_file

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0  # a zoo model probes in well under 10 s on a Pi; a hang is refused
EXIT_REFUSED, EXIT_NO_RUNTIME = 3, 4  # the child's exit codes besides 0
_ROOT = str(Path(__file__).resolve().parents[1])  # the child imports this same edge_client


class ProbeTimeout(ModelError):
    """The probe did not finish in time: not proof the file is bad, so not remembered."""


def _environment(runtime: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if runtime is not None:
        env["FEDGE_TFLITE_RUNTIME"] = runtime
    return env


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def probe_model(data: bytes, *, runtime: str | None = None,
                timeout: float = PROBE_TIMEOUT_S, python: str = sys.executable) -> None:
    """Check ``data`` in this process, then load and run it in a child (module docstring).

    Args:
        data: the model file.
        runtime: force this TFLite runtime in the child (default: its own choice).
        timeout: seconds the child may take.
        python: the interpreter to start.

    Raises:
        ModelError: a check failed, or the child crashed (the message names the signal),
            ran out of memory or refused the file.
        ProbeTimeout: the child did not finish within ``timeout`` (it is killed).
        ConfigError: the child could not be started, or found no TFLite runtime.
    """
    check_model_file(data)  # cheap: no child for a file that fails the checks
    try:
        done = subprocess.run([python, "-m", "edge_client.probe"], input=data,
                              capture_output=True, timeout=timeout, env=_environment(runtime))
    except subprocess.TimeoutExpired:
        raise ProbeTimeout(f"loading the model in a probe process took more than {timeout:g} s "
                           "(killed)") from None
    except OSError as e:
        raise ConfigError(f"cannot start the model probe {python}: {e}") from None
    said = done.stderr.decode(errors="replace").strip().splitlines()
    last = said[-1] if said else ""
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        raise ModelError(f"the model file crashed the TFLite runtime ({name}, signal "
                         f"{-done.returncode}) in a probe process")
    if done.returncode == EXIT_REFUSED:
        raise ModelError(last)
    if done.returncode == EXIT_NO_RUNTIME:
        raise ConfigError(last)
    if done.returncode != 0:
        raise ModelError(f"the model probe exited with status {done.returncode}: {last[:300]}")
    log.debug("model probe passed: %s", last)


def exercise(data: bytes) -> str:
    """Load ``data`` and run each signature once on zeros (what the child does).

    Returns:
        A one-line summary (runtime, model, batch size).

    Raises:
        ModelError: the file is refused, or a signature fails.
        ConfigError: no TFLite runtime.
    """
    import numpy as np

    from edge_client.model import TrainableModel

    model = TrainableModel(data, num_threads=1)
    meta = model.metadata
    x = np.zeros((meta.batch_size, *meta.input_shape), np.float32)
    y = np.zeros(meta.batch_size, np.float32)
    model.predict(x)
    model.set_weights(model.get_weights())
    model.evaluate(x, y)
    model.fit(x, y, epochs=1, lr=meta.learning_rate or 1e-3, rng=np.random.default_rng(0))
    return f"{model.runtime}: model {meta.model!r} batch {meta.batch_size} ran every signature"


def main() -> int:
    """``python -m edge_client.probe`` (model file on stdin): 0 ok, 3 refused, 4 no runtime."""
    data = sys.stdin.buffer.read()
    try:
        print(exercise(data), file=sys.stderr)
    except MemoryError:
        print("the TFLite runtime ran out of memory running the model", file=sys.stderr)
        return EXIT_REFUSED
    except ModelError as e:
        print(e, file=sys.stderr)
        return EXIT_REFUSED
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_NO_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
