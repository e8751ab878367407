"""The settings of one ``fedge demo`` run: built once from the flags, or by ``fedge bench results``.

``None`` means "the dataset's default": :func:`tools.demo.data.defaults_for` resolves it
against the dataset (clients, partition, rounds, local epochs, learning rate), so the flags'
defaults and the code's are the same values, kept here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_client.errors import ConfigError

CODECS = ("fp32", "fp16", "int8")
STRATEGIES = ("fedavg", "fedavgm", "fedadam", "median", "trimmed-mean")
WEIGHTINGS = ("samples", "uniform")


@dataclass(frozen=True)
class DemoConfig:
    """What one demo run does (``fedge demo --help`` describes each setting)."""

    dataset: str = "seed-gaussian"  # the seed article's two parties: the README's reference run
    clients: int | None = None  # None: the dataset's natural parties, else its default count
    rounds: int | None = None  # None: DEFAULT_ROUNDS of tools/demo/data.py
    partition: str | None = None  # None: the dataset's natural split where it has one
    alpha: float = 0.5  # Dirichlet / quantity skew; the partitioners use 0.5 whatever it is
    codec: str = "int8"  # a quarter of fp32's update bytes (docs/results.md compares the two)
    strategy: str = "fedavg"  # plain federated averaging: the baseline to compare against
    weighting: str = "samples"  # FedAvg by sample count (uniform: the seed article's mean)
    epochs: int | None = None  # None: the dataset's local epochs per round
    lr: float | None = None  # None: the dataset's local learning rate
    mu: float = 0.0  # FedProx proximal weight; 0 is FedAvg
    seed: int = 0  # seeds data, partition, model and training: a run is reproducible
    broker: str | None = None  # an external broker URL; None starts one on loopback
    embedded_broker: bool = False  # amqtt even when Mosquitto is installed
    out: Path = Path("out/demo")  # data shares, state, logs, models
    json_path: Path | None = None  # None: OUT/results.json
    plot_path: Path | None = None  # None: OUT/rounds.png
    round_timeout: float = 60.0  # seconds a round waits for its clients; ample on one machine
    keras: Path | None = None  # a saved Keras model to train instead of the dataset's zoo model
    progress: bool = True  # a progress bar per round (off: one log line per round)
    dp_epsilon: float | None = None  # client-level DP-FedAvg to this ε (docs/privacy.md); None: off
    dp_delta: float = 1e-5  # the δ of that guarantee
    dp_clip: float = 1.0  # each update's L2 norm is clipped to this with DP on

    def __post_init__(self) -> None:
        if self.clients is not None and self.clients < 1:
            raise ConfigError("--clients must be at least 1")
        if self.dp_epsilon is not None:
            if not self.dp_epsilon > 0 or not 0 < self.dp_delta < 1 or not self.dp_clip > 0:
                raise ConfigError("--dp-epsilon and --dp-clip must be positive, --dp-delta "
                                  "in (0, 1)")
            if self.strategy in ("median", "trimmed-mean"):
                raise ConfigError(f"--dp-epsilon does not work with --strategy {self.strategy}"
                                  ": the DP noise is calibrated to a sum (fedavg, fedavgm, "
                                  "fedadam)")

    @property
    def results_path(self) -> Path:
        """Where the results JSON goes."""
        return self.json_path or self.out / "results.json"

    @property
    def rounds_png(self) -> Path:
        """Where the accuracy/loss plot goes."""
        return self.plot_path or self.out / "rounds.png"
