"""The one adapter over a TFLite interpreter (the only module that imports one).

Runtimes are tried in order: ``ai_edge_litert`` → ``tflite_runtime`` →
``tensorflow`` (``tf.lite``). The environment variable ``FEDGE_TFLITE_RUNTIME``
(or the ``runtime`` argument) forces one of them.

``tflite_runtime`` 2.14 imported *after* TensorFlow 2.21 in the same process
fails to read any model ("vector::reserve"; the two ship clashing native
libraries). Imported before TensorFlow it works. So when TensorFlow is already
loaded before ``tflite_runtime`` is (or would be), automatic selection skips
``tflite_runtime`` (tools that export and train in one process use ``tf.lite``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.errors import ConfigError, ModelError
from edge_client.protocol import TensorSpec

log = logging.getLogger(__name__)

ENV_VAR = "FEDGE_TFLITE_RUNTIME"
#: Runtime names in order of preference, with the module holding ``Interpreter``.
RUNTIMES: dict[str, str] = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow",
}

Array = npt.NDArray[Any]


def _import_interpreter(name: str) -> Any:
    module = importlib.import_module(RUNTIMES[name])
    return module.lite.Interpreter if name == "tensorflow" else module.Interpreter


def _clashes_with_tensorflow() -> bool:
    """Whether tflite_runtime is (or would be) loaded after TensorFlow in this process."""
    if sys.modules.get("tensorflow") is None:
        return False
    if "tflite_runtime.interpreter" not in sys.modules:
        return True
    order = list(sys.modules)  # insertion order is import order
    return order.index("tensorflow") < order.index("tflite_runtime.interpreter")


def interpreter_class(runtime: str | None = None) -> tuple[str, Any]:
    """Find an interpreter class.

    Args:
        runtime: force this runtime; if None, use ``$FEDGE_TFLITE_RUNTIME`` if set,
            else the first installed of :data:`RUNTIMES`.

    Returns:
        The runtime name and its ``Interpreter`` class.

    Raises:
        ConfigError: the forced runtime is unknown or not installed, or none is installed.
    """
    forced = runtime or os.environ.get(ENV_VAR) or None
    if forced is not None:
        if forced not in RUNTIMES:
            raise ConfigError(
                f"unknown TFLite runtime {forced!r} (from argument or ${ENV_VAR}); "
                f"choose one of {', '.join(RUNTIMES)}"
            )
        try:
            return forced, _import_interpreter(forced)
        except ImportError as exc:
            raise ConfigError(f"TFLite runtime {forced!r} was requested but: {exc}") from exc
    for name in RUNTIMES:
        if name == "tflite_runtime" and _clashes_with_tensorflow():
            log.debug("skipping tflite_runtime: tensorflow was imported first")
            continue
        try:
            return name, _import_interpreter(name)
        except ImportError:
            log.debug("TFLite runtime %s is not installed", name)
    raise ConfigError(
        "no TFLite runtime installed: install tflite-runtime (Python ≤ 3.11) or ai-edge-litert"
    )


class Interpreter:
    """A loaded TFLite model, called by signature name with named numpy arrays."""

    def __init__(
        self, model: bytes, *, num_threads: int | None = None, runtime: str | None = None
    ) -> None:
        """Load ``model`` (the file contents).

        Args:
            model: the .tflite file bytes (trailing metadata is fine).
            num_threads: interpreter threads; None lets the runtime choose.
            runtime: force a runtime (see :func:`interpreter_class`).

        Raises:
            ConfigError: no usable runtime.
            ModelError: the runtime cannot load the model.
        """
        clash = _clashes_with_tensorflow()
        self.runtime, cls = interpreter_class(runtime)
        clash = clash and self.runtime == "tflite_runtime"
        try:
            with warnings.catch_warnings():
                # tf.lite.Interpreter warns that it is deprecated: it is only our fallback.
                warnings.simplefilter("ignore", UserWarning)
                self._interpreter = cls(model_content=bytes(model), num_threads=num_threads)
            names = list(self._interpreter.get_signature_list())
            self._runners = {n: self._interpreter.get_signature_runner(n) for n in names}
            self._inputs: dict[str, dict[str, TensorSpec]] = {}
        except MemoryError as exc:  # std::bad_alloc while building the interpreter
            raise ModelError(f"{self.runtime} ran out of memory loading the model "
                             f"({exc or 'std::bad_alloc'})") from exc
        except (ValueError, RuntimeError) as exc:
            hint = " (tensorflow was imported before tflite_runtime here)" if clash else ""
            raise ModelError(f"{self.runtime} cannot load the model: {exc}{hint}") from exc
        log.debug("loaded a model with signatures %s on %s", names, self.runtime)

    @property
    def signatures(self) -> tuple[str, ...]:
        """Names of the model's signatures."""
        return tuple(self._runners)

    def inputs(self, signature: str) -> dict[str, TensorSpec]:
        """Shapes and dtypes of the inputs of ``signature``."""
        details = self._runner(signature).get_input_details()
        return {name: _spec(name, d) for name, d in details.items()}

    def outputs(self, signature: str) -> dict[str, TensorSpec]:
        """Shapes and dtypes of the outputs of ``signature``."""
        details = self._runner(signature).get_output_details()
        return {name: _spec(name, d) for name, d in details.items()}

    def run(self, signature: str, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run ``signature`` on named inputs; return its named outputs (copies).

        Every input must be given with exactly the shape and dtype the signature
        declares (runtimes would otherwise silently resize tensors).

        Raises:
            ModelError: unknown signature, missing, unexpected or mis-shaped
                inputs, or the runtime rejected the call.
        """
        runner = self._runner(signature)
        self._check_inputs(signature, inputs)
        try:
            outputs = runner(**inputs)
            return {name: np.array(value) for name, value in outputs.items()}
        except MemoryError as exc:  # std::bad_alloc: the tensors are allocated on first call
            raise ModelError(f"{self.runtime}: signature {signature!r} ran out of memory "
                             f"allocating its tensors ({exc or 'std::bad_alloc'})") from exc
        except (ValueError, RuntimeError, SystemError) as exc:
            # tflite_runtime on numpy 2 fails with a SystemError ("returned a result
            # with an exception set"); name it instead of crashing the caller.
            raise ModelError(f"{self.runtime}: signature {signature!r} failed: {exc}") from exc

    def _check_inputs(self, signature: str, inputs: Mapping[str, Array]) -> None:
        specs = self._inputs.get(signature)
        if specs is None:
            specs = self._inputs[signature] = self.inputs(signature)
        if set(inputs) != set(specs):
            raise ModelError(
                f"signature {signature!r} takes inputs {sorted(specs)}, got {sorted(inputs)}"
            )
        for name, spec in specs.items():
            value = inputs[name]
            if np.shape(value) != spec.shape or np.asarray(value).dtype != spec.dtype:
                raise ModelError(
                    f"signature {signature!r} input {name!r} must be {spec.dtype} of shape "
                    f"{spec.shape}, got {np.asarray(value).dtype} of shape {np.shape(value)}"
                )

    def _runner(self, signature: str) -> Any:
        try:
            return self._runners[signature]
        except KeyError:
            raise ModelError(
                f"the model has no signature {signature!r}; it has {', '.join(self._runners)}"
            ) from None


def _spec(name: str, detail: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]),
                      str(np.dtype(detail["dtype"])))
