"""``fedge evaluate``: score a model on a labelled data file it never trained on.

Prints accuracy, ROC AUC and PR AUC (binary), per-class precision/recall and the confusion
matrix (multiclass), MSE/MAE (regression), log loss and a calibration table; ``--json``
writes every score, ``--plot`` a ROC (or predicted vs true) PNG.

The weights: ``--state-dir`` applies an aggregator's final weights (else its latest
checkpoint's; ``--version N`` picks one), else those embedded in ``--model``
(``STATE/final/model.tflite``, ``fedge export --from-state``), else the file's initial ones
(with a warning).

The scaling: a model trained by fedge-client devices saw each feature standardised with
that device's statistics. ``--client-state DIR`` applies exactly those (the device keeps
them in DIR/normalisation.json); without it NO scaling is applied, the report says so, and
it warns when the features look far from standardised.

examples:
  fedge evaluate --state-dir /var/lib/fedge-aggregator --client-state ward-7-state \\
      --data test.csv --label-column outcome --json scores.json --plot roc.png
  fedge evaluate --model final/model.tflite --data test.npz
  fedge evaluate --model model-int8.tflite --client-state ward-7-state --data test.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.data import LocalData, Task, load_data, load_inputs
from edge_client.encode import load_schema_csv
from edge_client.errors import ConfigError, DataError
from edge_client.model import ModelMetadata
from tools.evaluate.predictor import open_model
from tools.evaluate.report import document, scores, text
from tools.evaluate.scaling import Scaling, unscaled_warning
from tools.extras import require

Array = npt.NDArray[Any]
HELP = "score a model on a labelled test file: accuracy, ROC/PR AUC, log loss, calibration"


def add_parser(sub: Any) -> None:
    """Registers ``fedge evaluate``."""
    p = sub.add_parser("evaluate", help=HELP, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    add_data_arguments(p, labelled=True)
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="OUT", help="write every score as JSON "
                     "(top-level keys n, accuracy, roc_auc, pr_auc, log_loss, scaling, ...)")
    out.add_argument("--plot", type=Path, metavar="PNG", help="write the ROC curve and "
                     "calibration (binary), one-vs-rest ROC curves (multiclass) or predicted "
                     "vs true (regression); needs fedge[tools]")
    p.set_defaults(func=run)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model, weights and scaling flags ``evaluate`` and ``predict`` share."""
    g = p.add_argument_group("model and weights")
    g.add_argument("--model", type=Path, metavar="FILE.tflite", help="a trainable model file "
                   "(weights from --state-dir, else those inside it, else its initial ones) or "
                   "an int8 inference one; default: --state-dir's model.tflite")
    g.add_argument("--state-dir", type=Path, metavar="DIR", help="an aggregator's state dir: "
                   "apply its final weights, else its latest checkpoint's")
    g.add_argument("--version", type=int, metavar="N",
                   help="apply checkpoint N of --state-dir instead")
    g.add_argument("--threads", type=int, default=1, metavar="N",
                   help="TFLite interpreter threads; default 1")
    g = p.add_argument_group("feature scaling")
    g.add_argument("--client-state", type=Path, metavar="DIR", help="a fedge-client state "
                   "dir: standardise the features with the statistics that device trained "
                   "with (DIR/normalisation.json); default: no scaling (raw values)")


def add_data_arguments(p: argparse.ArgumentParser, *, labelled: bool) -> None:
    """The data flags (those of fedge-client): the file and how to read it."""
    g = p.add_argument_group("data (read as fedge-client reads its --data)")
    g.add_argument("--data", type=Path, required=True, metavar="FILE", help="a .csv with a "
                   "header row (one sample per row, or a sensor series with --window) or an "
                   ".npz with x" + (" and y" if labelled else " (y, if any, is ignored)"))
    g.add_argument("--label-column", metavar="COLUMN", help=(
        "CSV column holding the label; default label" if labelled else
        "CSV column to leave out of the features when the file has it; default label"))
    g.add_argument("--features", type=_columns, metavar="COLUMNS", help="comma-separated "
                   "feature columns, in the model's order (default: all others)")
    g.add_argument("--window", type=int, metavar="ROWS", help="time-series CSV: window length")
    g.add_argument("--stride", type=int, metavar="ROWS",
                   help="time-series CSV: step between windows (default: the window length)")
    g.add_argument("--group-column", metavar="COLUMN",
                   help="time-series CSV: windows never span two values of this column")


def _columns(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"bad column list {text!r}: names separated by commas")
    return names


def warn(command: str, message: str) -> None:
    """A warning for the user, on stderr."""
    print(f"fedge {command}: warning: {message}", file=sys.stderr)


def scaled_inputs(command: str, meta: ModelMetadata, scaling: Scaling, x: Array,
                  names: tuple[str, ...], data: Path) -> Array:
    """``x`` checked against the model's input shape and scaled; warns when unscaled
    features look far from standardised.

    Raises:
        DataError: the samples do not have the model's input shape, or the features are not
            those the scaling's statistics were computed on.
    """
    if x.shape[1:] != meta.input_shape:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise DataError(f"--data {data}: samples of shape {x.shape[1:]} ({len(names)} "
                        f"features: {shown}), but model {meta.model!r} takes "
                        f"{meta.input_shape}; choose the columns with --features (series: "
                        "--window)")
    warning = unscaled_warning(x, names, scaling)
    if warning is not None:
        warn(command, warning)
    try:
        return scaling(x, names)
    except DataError as e:
        raise DataError(f"--client-state: {e}") from None


def _check_labels(meta: ModelMetadata, y: Array, data: Path) -> None:
    if meta.task == "regression":
        return
    bad = np.flatnonzero(y >= meta.classes)
    if bad.size:
        raise DataError(f"--data {data}: label {y[bad[0]]} (sample {int(bad[0]) + 1}) is not a "
                        f"class of this {meta.task} model (0..{meta.classes - 1}); is "
                        "--label-column the right column?")


def read_data(args: argparse.Namespace, meta: ModelMetadata, *, labelled: bool) -> LocalData:
    """``--data`` as the devices read it: onto the model's schema when it carries one (by
    column name, imputed, one-hot; no labels needed unless ``labelled``), else by the flags.

    Raises:
        ConfigError: column flags given for a model whose schema names the columns.
    """
    if meta.schema is not None:
        given = [f for f, v in (("--label-column", args.label_column),
                                ("--features", args.features), ("--window", args.window))
                 if v is not None]
        if given:
            raise ConfigError(f"the model carries a data schema, which names the columns: "
                              f"leave out {', '.join(given)}")
        return load_schema_csv(args.data, meta.schema, labels=labelled).data
    if not labelled:
        x, names = load_inputs(args.data, label_column=args.label_column,
                               features=args.features, window=args.window,
                               stride=args.stride, group_column=args.group_column)
        return LocalData(x, np.zeros(len(x), np.int64), names, str(args.data))
    task: Task = "regression" if meta.task == "regression" else "classification"
    return load_data(args.data, label_column=args.label_column, features=args.features,
                     window=args.window, stride=args.stride, group_column=args.group_column,
                     task=task)


def run(args: argparse.Namespace) -> int:
    """Runs ``fedge evaluate``; returns 0."""
    if args.plot is not None:
        require("fedge evaluate --plot", "matplotlib")
    predictor = open_model(args.model, args.state_dir, args.version, args.threads)
    meta = predictor.metadata
    scaling = Scaling(None) if args.client_state is None else Scaling.of_client_state(
        args.client_state)
    data = read_data(args, meta, labelled=True)
    _check_labels(meta, data.y, args.data)
    x = scaled_inputs("evaluate", meta, scaling, data.x, data.feature_names, args.data)
    for note in predictor.notes:
        warn("evaluate", note)
    outputs = predictor.predict(x)
    found = scores(meta.task, data.y, outputs)
    label = (None if args.data.suffix.lower() == ".npz" else meta.schema.label
             if meta.schema is not None else args.label_column or "label")
    doc = document(predictor, scaling, str(args.data), label, found)
    print(text(doc, predictor.weights_sentence(), scaling.sentence()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot is not None:
        from tools.evaluate.plot import plot_scores

        plot_scores(doc, data.y, outputs, args.plot)
    written = [str(p) for p in (args.json, args.plot) if p is not None]
    if written:
        print(f"\nwrote {', '.join(written)}")
    return 0
