"""The int8 inference model of ``fedge export``: calibration examples and the conversion.

Post-training int8 quantization needs examples of what the model sees to calibrate its
activation ranges. They come from ``--representative DATA`` (read with the client's data
adapters; ``--client-state DIR`` standardises them as that device does), else from the
documented fallback: :data:`FALLBACK_EXAMPLES` standard-normal examples (seed
:data:`FALLBACK_SEED`), which fit inputs standardised as fedge-client does by default.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.data import load_inputs
from edge_client.errors import DataError
from tools.evaluate.scaling import Scaling
from tools.extras import require

Array = npt.NDArray[Any]
FALLBACK_EXAMPLES = 256  # = models.export.MAX_REPRESENTATIVE, all that calibration uses
FALLBACK_SEED = 0  # the same fallback gives the same model
SAME_FILE = Path("<--out>")  # --inference-int8 without a file: the int8 model goes to --out


@dataclass(frozen=True)
class Calibration:
    """Where the int8 calibration examples come from (``--representative``,
    ``--client-state``); both None: the fallback."""

    representative: Path | None = None
    client_state: Path | None = None

    def examples(self, input_shape: Sequence[int]) -> Array:
        """The calibration examples, shaped ``(n, *input_shape)`` as the model sees them.

        Raises:
            ConfigError, DataError: an unreadable file or state dir, or examples of
                another shape (named by flag).
        """
        shape = tuple(input_shape)
        if self.representative is None:
            print(f"fedge export: note: no --representative: calibrating the int8 model on "
                  f"{FALLBACK_EXAMPLES} standard-normal examples, right for inputs "
                  "standardised as fedge-client does by default; for a model trained on "
                  "raw values (--no-normalise) pass --representative DATA", file=sys.stderr)
            rng = np.random.default_rng(FALLBACK_SEED)
            return rng.standard_normal((FALLBACK_EXAMPLES, *shape)).astype(np.float32)
        x, names = load_inputs(self.representative)
        if x.shape[1:] != shape:
            raise DataError(f"--representative {self.representative}: examples of shape "
                            f"{x.shape[1:]}, but the model takes {shape}")
        if self.client_state is None:
            return x
        return Scaling.of_client_state(self.client_state)(x, names)


def int8_model(name: str, input_shape: Sequence[int], classes: int,
               weights: Mapping[str, Array], calibration: Calibration) -> bytes:
    """An int8 inference model of zoo model ``name`` with ``weights`` (needs TensorFlow).

    Raises:
        MissingExtra: TensorFlow is not installed.
        ValueError: weights or examples that do not fit the model.
        ExportError: the conversion failed.
    """
    require("fedge export --inference-int8", "tensorflow")
    examples = calibration.examples(input_shape)
    from models.export import export_inference_int8  # imports TensorFlow: only now

    return export_inference_int8(name, input_shape, classes, weights, examples)
