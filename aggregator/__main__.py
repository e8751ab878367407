"""``fedge-aggregator`` (``python -m aggregator``): run a federation as a service.

The composition root: parses flags and TOML into one frozen config, configures
logging, serves metrics, connects the durable MQTT session and runs the service.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from aggregator.config import AggregatorConfig, build_config, check_exposure
from aggregator.fedavg import STRATEGIES
from aggregator.modelfile import ModelFile, load_model_file, model_file_of
from aggregator.privacy import ACCOUNTANTS
from aggregator.run import begin
from aggregator.stages import NO_STAGES, StageHook
from aggregator.statistics import (
    STATISTICS_DIR,
    STATISTICS_MODEL,
    collect_reports,
    needs_statistics,
    shared_model,
)
from aggregator.store import AggregatorStore
from edge_client.errors import ConfigError
from edge_client.files import atomic_write, hold_lock, make_dirs
from edge_client.protocol import CODECS
from edge_client.transport import MqttTransport, TransportError

log = logging.getLogger("aggregator")

DESCRIPTION = """\
Run a federation: publish the model and global weights, announce rounds, validate and
store client updates, aggregate them, and publish each new global model (MQTT).
"""

CONNECT_TIMEOUT = 30.0
EPILOG = """\
environment:
  FEDGE_PASSWORD      the MQTT password (never put it in a flag or the config file)

examples:
  fedge-aggregator --model cnn1d.tflite --federation cardio --rounds 50 --min-clients 5 \\
      --clients-per-round 10 --round-timeout 300 --state-dir /var/lib/fedge-aggregator
  fedge-aggregator --broker mqtts://broker:8883 --ca ca.pem --cert aggregator.pem \\
      --key aggregator.key --signing-key signing.key --model cnn1d.tflite
  fedge-aggregator --config /etc/fedge/aggregator.toml --metrics-port 9105

exit status: 0 when the last round closed (or on SIGTERM), 1 when the broker cannot be
reached or the state directory fails, 2 on a configuration error (the message names the
flag), 130 on Ctrl-C.
See docs/aggregator.md for the TOML format, the state directory and crash recovery.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every option defaults to None so the TOML file can fill it in."""
    d = AggregatorConfig()
    p = argparse.ArgumentParser(
        prog="fedge-aggregator", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML file with any option "
                   "below (keys as the flags, optionally under [aggregator]); flags win")
    _broker_options(p.add_argument_group("broker"), d)
    _round_options(p.add_argument_group("rounds"), d)
    _training_options(p.add_argument_group("training (sent to clients with each round)"), d)
    _aggregation_options(p.add_argument_group("aggregation and update checks"), d)
    _intake_caps(p.add_argument_group("resource caps of the update intake (per process)"), d)
    _privacy_options(p.add_argument_group(
        "client-level differential privacy (off unless --dp-clip; docs/privacy.md)"), d)
    g = p.add_argument_group("service")
    g.add_argument("--state-dir", type=Path, metavar="DIR", help="round state, accepted "
                   f"updates, checkpoints and history.jsonl; default ./{d.state_dir}")
    g.add_argument("--metrics-port", type=int, metavar="PORT",
                   help=f"serve Prometheus metrics on this port, 0 = off; default {d.metrics_port}")
    g.add_argument("--metrics-host", metavar="ADDR",
                   help=f"address the metrics endpoint binds; default {d.metrics_host}")
    g.add_argument("--seed", type=int, metavar="N",
                   help=f"seed of client selection; default {d.seed}")
    g.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text (default) or one JSON object per line")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _broker_options(g: argparse._ArgumentGroup, d: AggregatorConfig) -> None:
    g.add_argument("--broker", metavar="URL",
                   help=f"mqtt://host:port or mqtts://host:port (TLS); default {d.broker}")
    g.add_argument("--mqtt-version", choices=["5", "3.1.1"], help="default 5")
    g.add_argument("--client-id", help="MQTT client id, the key of the durable session; "
                   "default fedge-aggregator-{federation}")
    g.add_argument("--ca", type=Path, metavar="PEM", help="CA certificate to verify the broker")
    g.add_argument("--cert", type=Path, metavar="PEM", help="client certificate (mutual TLS)")
    g.add_argument("--key", type=Path, metavar="PEM", help="client private key (mutual TLS)")
    g.add_argument("--username", help="MQTT username (password from FEDGE_PASSWORD)")
    g.add_argument("--password-file", type=Path, metavar="FILE",
                   help="read the MQTT password from this file")
    g.add_argument("--signing-key", type=Path, metavar="PEM", help="Ed25519 private key "
                   "(signing.key from `fedge provision`) that signs every manifest, round and "
                   "reply, so devices given signing.pub act only on this aggregator's models, "
                   "rounds and replies; default unsigned")
    g.add_argument("--insecure", action="store_true", default=None, help="run on a broker "
                   "that is not on loopback without TLS (mqtts://) or without --signing-key, "
                   "which is refused otherwise: anyone on the network could read the updates "
                   "and forge this aggregator's models (see docs/security.md)")


def _round_options(g: argparse._ArgumentGroup, d: AggregatorConfig) -> None:
    g.add_argument("--model", type=Path, metavar="FILE", help="the trainable .tflite file "
                   "(from `fedge export`) clients train; its weights are version 0 (required)")
    g.add_argument("--initial-weights", type=Path, metavar="NPZ", help="start a new run "
                   "(a new --state-dir) from these weights (.npz by weight name, e.g. "
                   "another run's STATE/final/weights.npz) instead of the model file's")
    g.add_argument("--federation", help=f"federation name (topic namespace); "
                   f"default {d.federation}")
    g.add_argument("--prefix", help=f"topic prefix; default {d.prefix}")
    g.add_argument("--rounds", type=int, metavar="N",
                   help=f"rounds the run has in all, then exit 0 (on a finished state dir, "
                   f"a larger N extends the run); default {d.rounds}")
    g.add_argument("--min-clients", type=int, metavar="N", help="quorum: fewest accepted "
                   f"updates to aggregate a round; default {d.min_clients}")
    g.add_argument("--min-available", type=int, metavar="N", help="clients online before a "
                   "round is announced; default --min-clients")
    g.add_argument("--clients-per-round", type=int, metavar="N",
                   help="clients selected per round; default all online")
    g.add_argument("--fraction", type=float, metavar="F",
                   help="share of online clients selected per round, in (0, 1]")
    g.add_argument("--round-timeout", type=float, metavar="SECONDS", help="from announcement "
                   f"to deadline, and the one extension; default {d.round_timeout:g}")
    g.add_argument("--max-new-clients", type=int, metavar="N", help="ids that never "
                   "delivered an accepted update selected per round (after every online id "
                   "that did), so a flood of made-up presence ids cannot capture a round; "
                   f"default {d.max_new_clients}")
    g.add_argument("--max-online", type=int, metavar="N", help="ids held online at once; a "
                   "presence beyond it is refused (counted as fedge_invalid_messages"
                   "{kind=\"presence_cap\"}) unless its id delivered before; default "
                   f"{d.max_online}")


def _training_options(g: argparse._ArgumentGroup, d: AggregatorConfig) -> None:
    g.add_argument("--epochs", type=int, help=f"local epochs per round; default {d.epochs}")
    g.add_argument("--batch-size", type=int, help="default: the model file's (fixed) batch size")
    g.add_argument("--lr", type=float, help="local learning rate; default: the model file's")
    g.add_argument("--mu", type=float, help=f"FedProx proximal weight, 0 = FedAvg; "
                   f"default {d.mu:g}")
    g.add_argument("--codec", choices=CODECS, help="codec clients must use for their updates; "
                   f"default {d.codec}")


def _aggregation_options(g: argparse._ArgumentGroup, d: AggregatorConfig) -> None:
    g.add_argument("--strategy", choices=STRATEGIES, help=f"default {d.strategy}")
    g.add_argument("--server-lr", type=float, help="server learning rate; default 1.0 "
                   "(0.1 for fedadam)")
    g.add_argument("--weighting", choices=["samples", "uniform"], help="weigh each update "
                   f"by its num_samples or equally; default {d.weighting}")
    g.add_argument("--max-samples-per-client", type=int, metavar="N",
                   help="cap on one update's weight (its num_samples is clipped); default none")
    g.add_argument("--weight-cap-factor", type=float, metavar="K", help="an update weighs at "
                   "most K x the median sample count the round's accepted updates claim; "
                   f"0 = off; default {d.weight_cap_factor:g}")
    g.add_argument("--clip-factor", type=float, metavar="K", help="clip (scale down) a delta "
                   "longer than K x the median L2 norm of the round's accepted deltas; 0 = off; "
                   f"default {d.clip_factor:g}")
    g.add_argument("--max-num-samples", type=int, metavar="N", help="credibility bound: an "
                   "update claiming more samples is accepted but weighs as N at most (logged, "
                   f"history bounds.capped); default {d.max_num_samples}")
    g.add_argument("--max-update-norm", type=float, metavar="X", help="reject an update whose "
                   f"delta has a larger L2 norm; default {d.max_update_norm:g}")
    g.add_argument("--max-payload", type=int, metavar="BYTES", help="largest MQTT payload "
                   f"(chunk size, header included); default {d.max_payload}")


def _intake_caps(g: argparse._ArgumentGroup, d: AggregatorConfig) -> None:
    g.add_argument("--max-message-bytes", type=int, metavar="BYTES", help="largest MQTT "
                   f"payload taken on update/+, refused undecoded; default {d.max_message_bytes}")
    g.add_argument("--max-transfer-bytes", type=int, metavar="BYTES", help="largest update "
                   "a transfer may declare; default the model's fp32 size plus framing")
    g.add_argument("--max-transfers", type=int, metavar="N", help="incomplete transfers "
                   f"held in total; default {d.max_transfers}")
    g.add_argument("--max-transfers-per-client", type=int, metavar="N", help="incomplete "
                   f"transfers held per client; default {d.max_transfers_per_client}")
    g.add_argument("--max-buffered-bytes", type=int, metavar="BYTES", help="sum of the "
                   f"sizes incomplete transfers declare; default {d.max_buffered_bytes}")
    g.add_argument("--transfer-timeout", type=float, metavar="SECONDS", help="drop an "
                   "incomplete transfer this long after its first chunk (its sender is "
                   "answered 'transfer: ... expired'); default "
                   "max(30, 2 x --round-timeout)")


def _privacy_options(g: argparse._ArgumentGroup, d: AggregatorConfig) -> None:
    g.add_argument("--dp-clip", type=float, metavar="C", help="turn on client-level DP-FedAvg: "
                   "clip every update's delta to L2 norm C, weigh every update 1, add Gaussian "
                   "noise of standard deviation Z*C to the sum (the aggregator adds it: it is "
                   "trusted); default off")
    g.add_argument("--dp-noise-multiplier", type=float, metavar="Z", help="noise multiplier Z "
                   "(noise std / C); or give --dp-epsilon and Z is computed for --rounds")
    g.add_argument("--dp-epsilon", type=float, metavar="E", help="privacy budget: the run "
                   "finishes (exit 0, reason 'privacy budget') before a round that would take "
                   "epsilon above E; without --dp-noise-multiplier, Z is the smallest that "
                   "lets --rounds rounds fit in E")
    g.add_argument("--dp-delta", type=float, metavar="D", help="delta of the (epsilon, delta) "
                   "guarantee; required with --dp-clip (keep it below 1/number of devices)")
    g.add_argument("--dp-accountant", choices=ACCOUNTANTS, help="rdp (Renyi DP, conservative, "
                   f"fast) or pld (privacy loss distributions, tighter); default {d.dp_accountant}")
    g.add_argument("--dp-sampling-rate", type=float, metavar="Q", help="with DP, each online "
                   "client is selected with probability Q, independently (Poisson sampling); "
                   "default --fraction, else 1 (every online client)")
    g.add_argument("--dp-adaptive-clip", action="store_true", default=None, help="adaptive "
                   "clipping (Andrew et al. 2021): --dp-clip is the first round's C, then C "
                   "follows the --dp-clip-quantile of the update norms; the noised count it "
                   "needs is paid for within Z (the sum gets a little more noise)")
    g.add_argument("--dp-clip-quantile", type=float, metavar="G", help="share of updates "
                   f"adaptive clipping aims to leave unclipped; default {d.dp_clip_quantile:g}")
    g.add_argument("--dp-clip-lr", type=float, metavar="ETA", help="geometric step of C per "
                   f"round with adaptive clipping; default {d.dp_clip_lr:g}")
    g.add_argument("--dp-clip-count-noise", type=float, metavar="SIGMA", help="noise std on "
                   "the count of unclipped updates (must exceed Z/2); default Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message (and traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry = {"ts": round(record.created, 3), "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(verbose: bool, fmt: str) -> None:
    """Root handler on stderr, text or JSON lines (only ``__main__`` configures logging)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def serve(config: AggregatorConfig, stop: threading.Event,
          stages: StageHook = NO_STAGES) -> int:
    """Load the model, connect, and run the service until it finishes or ``stop`` is set.

    Refuses an exposed broker without TLS or signing (:func:`check_exposure`) and holds
    the state directory's lock throughout, so a second aggregator on it is refused.
    ``stages`` receives the service's stage timings (``fedge bench round``).

    Raises:
        ConfigError: bad model file, state directory (or one in use), TLS files or
            metrics port; an exposed broker without ``--insecure``.
        TransportError: the broker could not be reached in time.
    """
    for warning in check_exposure(config):
        log.warning("%s", warning)
    with hold_lock(config.state_dir, "--state-dir", "fedge-aggregator"):
        return _serve(config, stop, stages)


def _serve(config: AggregatorConfig, stop: threading.Event, stages: StageHook) -> int:
    """:func:`serve` once this process holds the state directory."""
    assert config.model is not None  # check() requires it
    from aggregator.service import AggregatorService  # needs prometheus_client: fedge[server]

    model_file = load_model_file(config.model)
    store = AggregatorStore(config.state_dir)
    model_file = _with_statistics(config, model_file, stop)
    if stop.is_set():
        return 0
    run = begin(store, model_file.sha256, model_file.data, config.initial_weights)
    transport = MqttTransport(config.broker_config(fresh_session=run.new))
    service = AggregatorService(config, transport, model_file, store=store, stages=stages,
                                run=run)
    transport.on_connect_hooks.append(service.republish.set)
    try:
        service.metrics.serve(config.metrics_port, config.metrics_host)
    except OSError as e:
        raise ConfigError(f"--metrics-port {config.metrics_port}: cannot listen: {e}") from None
    try:
        transport.start(wait=CONNECT_TIMEOUT)
        return service.run(stop)
    finally:
        transport.stop()
        service.metrics.close()


def _with_statistics(config: AggregatorConfig, model_file: ModelFile,
                     stop: threading.Event) -> ModelFile:
    """The statistics phase (:mod:`aggregator.statistics`) when the model's schema asks for
    shared scaling: the model with the federation's statistics, kept in the state dir."""
    schema = model_file.metadata.schema
    if schema is None or not needs_statistics(schema):
        return model_file
    kept = config.state_dir / STATISTICS_DIR / STATISTICS_MODEL
    if kept.exists():
        log.info("statistics phase done before: training %s", kept)
        return model_file_of(kept.read_bytes(), str(kept))
    log.info("statistics phase: waiting for the statistics of %d sites (--min-clients)",
             config.min_clients)
    transport = MqttTransport(dataclasses.replace(
        config.broker_config(), client_id=f"{config.mqtt_client_id}-stats", durable=False,
        manual_ack=False))
    transport.start(wait=CONNECT_TIMEOUT)
    try:
        reports = collect_reports(transport, config.topics(), schema, config.min_clients, stop)
    finally:
        transport.stop()
    if stop.is_set():
        return model_file
    data = shared_model(model_file.data, schema, reports)
    make_dirs(kept.parent)
    atomic_write(kept, data)
    log.info("statistics phase: %d sites combined; the model carries the shared statistics "
             "(%s)", len(reports), kept)
    return model_file_of(data, str(kept))


def main(argv: Sequence[str] | None = None, stages: StageHook = NO_STAGES) -> int:
    """Entry point of ``fedge-aggregator`` (``stages``: see :func:`serve`)."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.log_format)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return serve(build_config(args), stop, stages)
    except ConfigError as e:
        print(f"fedge-aggregator: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an edge-only install: the service's optional dependencies
        print(f"fedge-aggregator needs fedge[server]: pip install 'fedge[server]' ({e})",
              file=sys.stderr)
        return 2
    except TransportError as e:
        print(f"fedge-aggregator: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the state directory failed: a restart recovers from the last write
        log.critical("storage failure, stopping: %s", e)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
