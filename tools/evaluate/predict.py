"""``fedge predict``: a model's predictions for new data, one CSV row per input row.

Columns of ``--out``: binary ``probability,class`` (the probability of class 1, and the
class at ``probability >= 0.5``); multiclass ``p0,...,pK-1,class`` (the argmax);
regression ``prediction``. A time-series CSV (``--window``) gives one row per window.

The data need no label column (one named by ``--label-column``, default ``label``, is left
out of the features when present). Weights and scaling are chosen as for ``fedge evaluate``:
``--client-state DIR`` standardises with that device's statistics, else no scaling.

examples:
  fedge predict --state-dir /var/lib/fedge-aggregator --client-state ward-7-state \\
      --data new-visits.csv --out predictions.csv
  fedge predict --model model-int8.tflite --data new.npz --out predictions.csv
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.files import atomic_write
from edge_client.scoring import THRESHOLD
from tools.evaluate.command import (
    add_data_arguments,
    add_model_arguments,
    read_data,
    scaled_inputs,
    warn,
)
from tools.evaluate.predictor import open_model
from tools.evaluate.scaling import Scaling

Array = npt.NDArray[Any]
HELP = "write a model's predictions for new data as CSV (probability and class per row)"


def add_parser(sub: Any) -> None:
    """Registers ``fedge predict``."""
    p = sub.add_parser("predict", help=HELP, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    add_data_arguments(p, labelled=False)
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv",
                   help="the predictions, one row per input row (or window)")
    p.set_defaults(func=run)


def prediction_table(task: str, outputs: Array) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the predictions CSV (see the module docstring)."""
    def number(v: float) -> str:
        return format(float(v), ".7g")

    if task == "binary":
        p = outputs[:, 1]
        return ["probability", "class"], [[number(v), str(int(v >= THRESHOLD))] for v in p]
    if task == "multiclass":
        header = [f"p{c}" for c in range(outputs.shape[1])] + ["class"]
        return header, [[*map(number, row), str(int(np.argmax(row)))] for row in outputs]
    return ["prediction"], [[number(v)] for v in outputs]


def run(args: argparse.Namespace) -> int:
    """Runs ``fedge predict``; returns 0."""
    predictor = open_model(args.model, args.state_dir, args.version, args.threads)
    meta = predictor.metadata
    scaling = Scaling(None) if args.client_state is None else Scaling.of_client_state(
        args.client_state)
    data = read_data(args, meta, labelled=False)
    inputs = scaled_inputs("predict", meta, scaling, data.x, data.feature_names, args.data)
    for note in predictor.notes:
        warn("predict", note)
    header, rows = prediction_table(meta.task, predictor.predict(inputs))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(args.out, text.getvalue().encode())
    print(f"wrote {args.out}: {len(rows)} rows, columns {','.join(header)} "
          f"({meta.model}, {meta.task})")
    print(f"weights  {predictor.weights_sentence()}")
    print(f"scaling  {scaling.sentence()}")
    return 0
