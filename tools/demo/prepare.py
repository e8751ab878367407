"""Everything a demo run prepares before the federation starts: data shares, the model file.

:func:`prepare` loads the dataset, resolves the run's settings against the dataset's
defaults, writes one data file per client and exports the trainable model; the demo
(:mod:`tools.demo.command`) and its report (:mod:`tools.demo.report`) both read the
resulting :class:`Setup`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tools.datasets import Dataset, load_dataset
from tools.demo.config import DemoConfig
from tools.demo.data import ClientShare, DemoDefaults, defaults_for, pooled_training, share_data
from tools.evaluate.scaling import Scaling

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Setup:
    """Everything prepared before the federation starts."""

    dataset: Dataset
    defaults: DemoDefaults
    shares: list[ClientShare]
    model_file: bytes
    model_path: Path
    pooled_x: Array  # the union of the clients' training data (the pooled baseline's)
    pooled_y: Array
    pooled_scaling: Scaling  # the centralised baseline's: statistics of all training data
    spec: Any  # the model's models.zoo.ModelSpec (the zoo's, or the Keras model's)
    constants: dict[str, Array]  # its frozen layers' weights (a Keras model's; else none)

    @property
    def party_scalings(self) -> list[Scaling]:
        """Each party's own scaling, as its fedge-client applies it; one "none" when the
        clients train on raw values."""
        scalings = [c.scaling for c in self.shares]
        return scalings if any(s.stats is not None for s in scalings) else [Scaling(None)]

    def scaling_note(self) -> dict[str, Any]:
        """The ``scaling`` entry of the results: how the headline scores were scaled."""
        if self.party_scalings[0].stats is None:
            return {"kind": "none", "note": "raw feature values, as the clients train "
                    "(--no-normalise)"}
        return {"kind": "each-party", "parties": len(self.shares),
                "note": "each party's own standardisation, as its fedge-client applies it; "
                f"scores are the mean over the {len(self.shares)} parties"}


def prepare(config: DemoConfig) -> Setup:
    """Loads the data, splits it into client files, exports the trainable model."""
    from models.export import export_trainable

    ds = load_dataset(config.dataset, seed=config.seed)
    d = defaults_for(ds, config)
    # a previous run's state would be resumed (the aggregator recovers from its state dir)
    # and its results reported as this run's, whatever the flags now say
    for stale in ("aggregator", "clients", "logs"):
        shutil.rmtree(config.out / stale, ignore_errors=True)
    config.out.mkdir(parents=True, exist_ok=True)
    shares = share_data(ds, d, config.out / "clients", np.random.default_rng(config.seed))
    if config.keras is not None:
        model_file, spec, constants = _keras_model(config.keras, ds, d)
    else:
        from models import zoo

        spec, constants = zoo.build(ds.info.model, ds.info.input_shape, len(ds.info.classes)), {}
        model_file = export_trainable(ds.info.model, ds.info.input_shape, len(ds.info.classes),
                                      d.batch_size, optimizer=d.optimizer, seed=config.seed)
    model_path = config.out / "model.tflite"
    model_path.write_bytes(model_file)
    pooled_x, pooled_y = pooled_training(ds, shares)
    return Setup(ds, d, shares, model_file, model_path, pooled_x, pooled_y,
                 Scaling.fit(pooled_x, d.normalise, "the pooled training data"), spec, constants)


def _keras_model(path: Path, ds: Dataset, d: DemoDefaults) -> tuple[bytes, Any, dict[str, Array]]:
    """Export the Keras model at ``path`` for this dataset (its own optimizer, else the
    dataset's); the file, its spec and its frozen weights."""
    from models.export import export_model
    from models.keras_import import KerasImportError, load

    imported = load(path)
    spec = imported.spec
    if spec.input_shape != tuple(ds.info.input_shape) or spec.classes != len(ds.info.classes):
        raise KerasImportError(
            f"--keras {path}: the model takes {spec.input_shape} with {spec.classes} classes; "
            f"{ds.info.name} has {tuple(ds.info.input_shape)} and {len(ds.info.classes)}")
    optimizer = imported.optimizer or d.optimizer
    settings = imported.hyperparameters if imported.optimizer else {}
    blob = export_model(spec, d.batch_size, imported.weights, imported.constants, optimizer,
                        None, imported.learning_rate, hyperparameters=settings)
    return blob, spec, imported.constants
