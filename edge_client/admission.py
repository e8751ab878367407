"""Which model files a device loads: checked, probed once, and refused for good.

A model file reaches a device from the broker (named by a manifest) or from its own state
directory (stored by an earlier run, maybe by an older fedge). Before it is loaded in the
device's process, :class:`ModelAdmission`

* refuses a file whose SHA-256 was refused before (``models.refused`` in the state dir),
  without looking at it again: the broker redelivers retained files on every start;
* probes a file it has not probed yet in a child process (:mod:`edge_client.probe`: the
  checks, then a load and one run of every signature), so a file that crashes the native
  runtime kills the child, not the device; a stored file whose SHA-256 is the one in
  ``model.probed`` is not probed again;
* remembers a refusal (any :class:`~edge_client.errors.ModelError` of the probe or the
  load) before it re-raises it. A probe that timed out is not remembered: it proves
  nothing about the file, and the next start tries again.

Only a model that passed is stored (:meth:`ModelAdmission.keep`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge_client.errors import ModelError
from edge_client.probe import ProbeTimeout
from edge_client.state import MODEL_FILE, PROBED_FILE, StateDir
from edge_client.training import Trainer

log = logging.getLogger(__name__)


class ModelAdmission:
    """The gate every model file passes on its way into a device (module docstring)."""

    def __init__(self, state: StateDir, load: Callable[[bytes], Trainer],
                 probe: Callable[[bytes], None] | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        """``probe`` None loads without a child process (tests, trusted files)."""
        self.state, self._load, self._probe, self._clock = state, load, probe, clock
        self._refused = state.refused_models()

    def refusal(self, digest: str) -> str | None:
        """Why the model file ``digest`` was refused, or None when it was not."""
        return self._refused.get(digest)

    def load(self, blob: bytes, digest: str, *, stored: bool = False) -> Trainer:
        """Probe (unless done before for this stored file) and load ``blob``.

        Raises:
            ModelError: refused now (remembered) or earlier.
            ProbeTimeout: the probe took too long (not remembered).
            ConfigError: no TFLite runtime, or the probe could not start.
        """
        reason = self._refused.get(digest)
        if reason is not None:
            raise ModelError(f"model {digest[:12]}… was refused earlier: {reason}")
        try:
            if self._probe is not None and not (stored and self._probed(digest)):
                log.info("probing model %s… in a child process", digest[:12])
                self._probe(blob)
            return self._load(blob)
        except ProbeTimeout as e:
            log.error("model %s…: %s; not loaded, tried again on the next start", digest[:12], e)
            raise
        except ModelError as e:
            self._refused[digest] = str(e)
            self.state.refuse_model(digest, str(e), self._clock())
            log.error("refusing model %s…: %s", digest[:12], e)
            raise

    def keep(self, blob: bytes, digest: str) -> None:
        """Store a model that passed as ``model.tflite`` (and mark it probed, if it was)."""
        if self.state.read(MODEL_FILE) != blob:
            self.state.write(MODEL_FILE, blob)
        if self._probe is not None and not self._probed(digest):
            self.state.write(PROBED_FILE, digest.encode())

    def _probed(self, digest: str) -> bool:
        return self.state.read(PROBED_FILE) == digest.encode()
