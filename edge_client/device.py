"""Wires a :class:`~edge_client.config.ClientConfig` into a running :class:`EdgeClient`."""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_client.client import ClientSettings, EdgeClient
from edge_client.config import ClientConfig, check_exposure
from edge_client.data import LocalData, load_data
from edge_client.encode import load_schema_csv, schema_norm_stats
from edge_client.errors import ConfigError, ModelError, ProtocolError
from edge_client.feature_stats import layout_sha256, site_summaries
from edge_client.files import hold_lock
from edge_client.model import TrainableModel
from edge_client.model_file import read_schema
from edge_client.normalise import NormStats, compute_norm_stats, normalise
from edge_client.privacy import DpSgdSettings
from edge_client.probe import probe_model
from edge_client.protocol import Presence, SignedMessage, StatsReport, Topics
from edge_client.runtime import interpreter_class
from edge_client.schema import Schema
from edge_client.state import NORMALISATION_FILE, StateDir
from edge_client.training import LocalSplit, Trainer, single_class
from edge_client.transport import BrokerConfig, MqttTransport, Transport, TransportError, Will

log = logging.getLogger(__name__)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def prepare_data(config: ClientConfig, schema: Schema | None = None
                 ) -> tuple[LocalData, NormStats | None]:
    """Loads the local data file and (unless disabled) standardises it with local statistics
    (or the schema's shared ones); ``schema`` overrides ``--schema`` (the model's).

    Returns:
        The data the device trains on, and the statistics it was standardised with (None:
        raw values, with ``--no-normalise`` or for image data, which is not standardised).
    """
    if config.data is None:
        raise ConfigError("--data is required: the local data file to train on")
    schema = schema or _schema(config)
    data = _read(config, config.data, schema)
    if not config.normalise or data.x.ndim not in (2, 3):
        return data, None
    if schema is not None:
        stats = schema_norm_stats(schema, data.x)
    else:
        stats = compute_norm_stats(data.x, features=data.feature_names)
    return LocalData(normalise(data.x, stats), data.y, data.feature_names, data.source), stats


def _schema(config: ClientConfig) -> Schema | None:
    if config.schema is None:
        return None
    given = [f for f, v in (("--label-column", config.label_column),
                            ("--features", config.features), ("--window", config.window))
             if v is not None]
    if given:
        raise ConfigError(f"--schema names the columns; {', '.join(given)} cannot be given too")
    try:
        return read_schema(config.schema)
    except ModelError as e:
        raise ConfigError(f"--schema {config.schema}: {e}") from None


def check_model_schema(model: Schema | None, local: Schema | None) -> None:
    """A model exported with a schema must read the inputs this device's ``--schema`` makes.

    Raises:
        ModelError: the model's schema makes other inputs than ``--schema`` does.
    """
    if model is None:
        return
    if local is None:
        log.warning("the model carries a data schema but this device has no --schema: its "
                    "columns may not be what the model expects (see fedge schema show)")
        return
    if model.encoded_names != local.encoded_names:
        raise ModelError(f"the model's schema makes inputs {list(model.encoded_names)[:6]}..., "
                         f"--schema makes {list(local.encoded_names)[:6]}...: give every "
                         "device the federation's schema")


def stats_report(path: Path, schema: Schema, client_id: str, min_count: int,
                 now: float) -> StatsReport:
    """This device's statistics of its table (``fedge stats``): per column counts, sums,
    bins; a column with fewer than ``min_count`` values is left out."""
    rows, summaries, small = site_summaries(path, schema, min_count)
    return StatsReport(client_id, layout_sha256(schema), rows, min_count, summaries, small, now)


def publish_stats(transport: Transport, topics: Topics, report: StatsReport) -> None:
    """Publishes the report retained on ``stats/{client_id}``; a failure is only logged."""
    payload = report.encode()
    if len(payload) > StatsReport.MAX_BYTES:
        log.warning("statistics not published: %d bytes, over the %d a report may have "
                    "(a schema this wide: fewer categories or columns)", len(payload),
                    StatsReport.MAX_BYTES)
        return
    try:
        transport.publish(topics.stats(report.client_id), payload, retain=True, timeout=10)
        log.info("statistics of %d rows published for fedge stats (%d columns, %d left out "
                 "with fewer than %d values)", report.rows, len(report.features),
                 len(report.suppressed), report.min_count)
    except TransportError as e:
        log.warning("statistics not published: %s", e)


def share_stats(transport: Transport, topics: Topics, data: Path, schema: Schema,
                client_id: str, min_count: int) -> None:
    """Computes and publishes this device's statistics (``--schema``, unless
    ``--no-stats``); a report that cannot be made or sent is logged, never fatal."""
    try:
        report = stats_report(data, schema, client_id, min_count, time.time())
    except ProtocolError as e:  # e.g. more columns than a report may carry
        log.warning("statistics not published: %s", e)
        return
    publish_stats(transport, topics, report)


def _read(config: ClientConfig, path: Path, schema: Schema | None) -> LocalData:
    """``path`` read through ``schema``, or as ``--label-column``, ``--features`` etc. say."""
    if schema is not None:
        return load_schema_csv(path, schema).data
    return load_data(path, label_column=config.label_column, features=config.features,
                     window=config.window, stride=config.stride,
                     group_column=config.group_column)


def prepare_test_data(config: ClientConfig, stats: NormStats | None,
                      schema: Schema | None = None) -> LocalData | None:
    """``--eval-data``, read like ``--data`` and scaled with the training data's statistics."""
    if config.eval_data is None:
        return None
    schema = schema or _schema(config)
    data = _read(config, config.eval_data, schema)
    if stats is None:
        return data
    return LocalData(normalise(data.x, stats), data.y, data.feature_names, data.source)


def keep_norm_stats(state: StateDir, stats: NormStats | None) -> None:
    """Keeps the statistics the device standardises with in its state dir
    (``normalisation.json``), so ``fedge evaluate --client-state`` applies the same; removes
    a file left from an earlier run when the device now trains on raw values."""
    if stats is None:
        (state.root / NORMALISATION_FILE).unlink(missing_ok=True)
        return
    state.write(NORMALISATION_FILE, stats.to_json().encode())


def adopt_schema(config: ClientConfig, state: StateDir, schema: Schema, split: LocalSplit,
                 test: LocalData | None) -> None:
    """Re-reads the table onto the model's ``schema`` (the federation's fills and shared
    mean/std, from the aggregator's statistics phase) into the same split, in place: the
    same rows in the same order, now imputed and standardised as at every other site."""
    log.info("the model carries the federation's statistics: %s re-read onto its schema "
             "(shared scaling)", config.data)
    data, stats = prepare_data(config, schema)
    again = LocalSplit.of(data.x, data.y, seed=config.seed or 0, holdout=config.holdout)
    np.copyto(split.x_train, again.x_train)
    np.copyto(split.x_eval, again.x_eval)
    keep_norm_stats(state, stats)
    fresh = prepare_test_data(config, stats, schema)
    if test is not None and fresh is not None:
        np.copyto(test.x, fresh.x)


def signature_verifier(config: ClientConfig) -> Callable[[SignedMessage], None] | None:
    """The signature check of ``--verify-key``, or None (with a warning) without it.

    Raises:
        ConfigError: the key file is unusable, or ``cryptography`` is not installed.
    """
    if config.verify_key is None:
        log.warning("manifests, rounds and replies are NOT verified: pass --verify-key with "
                    "the aggregator's signing.pub to refuse a model, weights, round or reply "
                    "it did not sign")
        return None
    try:  # optional on a device: only needed to verify
        from edge_client import signing
    except ImportError as e:
        raise ConfigError(f"--verify-key needs the cryptography package ({e}): "
                          "pip install cryptography") from None
    trusted = signing.load_trusted_keys(config.verify_key)
    log.info("manifests, rounds and replies must be signed by key id %s",
             " or ".join(trusted.ids))
    return trusted.verify


def dp_settings(config: ClientConfig) -> DpSgdSettings | None:
    """The device's DP-SGD settings (``--dp-budget`` and co.), or None without a budget.

    Raises:
        ConfigError: a --dp-* flag without --dp-budget, or a budget without --dp-delta
            and --dp-noise-multiplier.
    """
    if config.dp_budget is None:
        given = [f for f, v in (("--dp-delta", config.dp_delta),
                                ("--dp-noise-multiplier", config.dp_noise_multiplier),
                                ("--dp-batch", config.dp_batch)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} without --dp-budget: give the privacy "
                              "budget to train with DP-SGD")
        return None
    if config.dp_delta is None or config.dp_noise_multiplier is None:
        raise ConfigError("--dp-budget needs --dp-delta and --dp-noise-multiplier (no "
                          "defaults: both depend on the data)")
    return DpSgdSettings(config.dp_budget, config.dp_delta, config.dp_noise_multiplier,
                         config.dp_clip, config.dp_batch)


def run_client(config: ClientConfig, stop: threading.Event) -> int:
    """Runs the edge client until done or stopped; returns the exit code.

    Refuses a broker off loopback without ``--verify-key`` (:func:`check_exposure`), and
    holds the state directory's lock throughout: a second client on it would send and
    delete the same outbox entries.

    Raises:
        ConfigError: a bad setting, an exposed broker without ``--insecure``, or a state
            directory in use by another ``fedge-client``.
    """
    for warning in check_exposure(config):
        log.warning("%s", warning)
    verify = signature_verifier(config)  # a bad key stops the start before the state dir
    dp_settings(config)
    with hold_lock(config.state_dir, "--state-dir", "fedge-client"):
        return _run(config, stop, verify)


def warn_single_class(client_id: str, split: LocalSplit) -> None:
    """Logs a warning when the site trains on one class only: its update pulls the
    federation's model towards always predicting that class (a label column mix-up, or
    a site that only sees one outcome); it still takes part."""
    only = single_class(split.y_train)
    if only is not None:
        log.warning("client %s: local training data holds one class only: all %d training "
                    "samples are class %d; its updates pull the federation's model towards "
                    "always predicting it (check the label column)", client_id,
                    len(split.y_train), only)


def _run(config: ClientConfig, stop: threading.Event,
         verify: Callable[[SignedMessage], None] | None) -> int:
    """:func:`run_client` once this process holds the state directory."""
    state = StateDir(config.state_dir)
    client_id = state.client_id(config.client_id)
    data, stats = prepare_data(config)
    keep_norm_stats(state, stats)
    split = LocalSplit.of(data.x, data.y, seed=config.seed or 0, holdout=config.holdout)
    warn_single_class(client_id, split)
    test = prepare_test_data(config, stats)
    runtime_name, _ = interpreter_class()
    topics = Topics(config.federation, config.prefix)

    def presence(online: bool) -> bytes:
        return Presence(
            client_id=client_id, online=online, samples=len(split.x_train),
            runtime=runtime_name, runtime_version=_version(runtime_name.replace("_", "-")),
            software_version=_version("fedge"), timestamp=time.time(),
        ).encode()

    transport = MqttTransport(BrokerConfig(
        url=config.broker, client_id=client_id, username=config.username,
        password=config.password, ca=config.ca, cert=config.cert, key=config.key,
        mqtt_version=config.mqtt_version, durable=True, fresh_session=not config.resume_session,
        will=Will(topics.presence(client_id), presence(False)),
    ))
    settings = ClientSettings(client_id=client_id, topics=topics, max_payload=config.max_payload,
                              once=config.once, max_rounds=config.max_rounds,
                              presence=presence, verify=verify)

    schema = _schema(config)
    read_with = [schema]  # the schema the table was last read with

    def load_model(blob: bytes) -> Trainer:
        model = TrainableModel(blob, num_threads=config.threads)
        check_model_schema(model.metadata.schema, schema)
        shared = model.metadata.schema
        if shared is not None and shared.shared_scaling and shared != read_with[0]:
            adopt_schema(config, state, shared, split, test)
            read_with[0] = shared
        return model

    client = EdgeClient(settings, transport, state, split, load_model,
                        rng=np.random.default_rng(config.seed),
                        test=None if test is None else (test.x, test.y), probe=probe_model,
                        dp=dp_settings(config))
    transport.on_connect_hooks.append(client.announce_presence.set)
    log.info("client %s: %d local samples (%d for training, --holdout %g held out for local "
             "evaluation), broker %s, federation %s", client_id, len(data),
             len(split.x_train), config.holdout, config.broker, config.federation)
    transport.start()
    if schema is not None and config.stats and config.data is not None:
        share_stats(transport, topics, config.data, schema, client_id, config.min_count)
    try:
        return client.run(stop)
    finally:
        try:  # a goodbye; when the broker is gone, the Last Will says the same
            transport.publish(topics.presence(client_id), presence(False), retain=True,
                              timeout=5)
        except TransportError as e:
            log.info("could not say goodbye: %s", e)
        transport.stop()
