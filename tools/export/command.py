"""``fedge export``: write a model file, from the model zoo or from an aggregator's state dir.

From the zoo (needs fedge[author], TensorFlow): a trainable ``.tflite`` with the signatures
train, infer, evaluate, get_weights and set_weights, and its initial weights.

From a Keras model (``--keras MODEL.keras``, needs fedge[author]): a saved Keras 3
Sequential, or a Functional model with one input and one output, made of the layers
docs/models.md lists, mapped onto fedge's builtin-only layers with the model's own weights;
layers with trainable=False stay fixed on the device. The loss comes from the model's
compile config or --loss, the optimizer from it or --optimizer, the learning rate from it or
--lr. An unsupported layer or option stops the export naming the layer, its class, the
option and what is supported.

From a state dir (``--from-state DIR [--version N]``): the run's model with the weights of
that version (default: the final ones, else the latest checkpoint's) embedded, the same
file the aggregator writes as ``DIR/final/model.tflite``; no TensorFlow needed. ``--out
FILE.npz`` writes the weights instead (float32 by name, as ``DIR/final/weights.npz``).

``--inference-int8`` (needs TensorFlow) makes an int8-quantized inference model: written
to ``--out``, or also to ``--inference-int8 OUT`` besides the trainable ``--out``. Its
activation ranges are calibrated on ``--representative DATA`` (.npz with x, or a .csv read
as fedge-client reads it; ``--client-state DIR`` standardises those examples as that
device does, so they look like what the model saw). Without ``--representative`` the
documented fallback calibrates on 256 standard-normal examples (seed 0): right for inputs
standardised as fedge-client does by default, wrong for a model trained on raw values
(--no-normalise); a note says so.

``--schema schema.toml`` (from ``fedge schema infer``) gives the input width instead of
``--input-shape`` and is carried in the model file's metadata, shown when written.

``--class-weights balanced`` weights the training loss by class, w[c] = N / (K * N[c]) (as
scikit-learn's "balanced"), so a rare outcome counts as much as a common one. The class
counts N[c] come from ``--class-counts`` or from the schema's label counts (written by
``fedge stats --schema S --out shared.toml``: the federation's, never one site's).

zoo models (--model) and their --input-shape:
{zoo_shapes}

examples:
  fedge export --keras seed.keras --batch-size 32 --out seed.tflite
  fedge export --model mlp --input-shape 30 --classes 2 --hidden 64,32 --dropout 0.2 \\
      --batch-size 32 --out mlp.tflite
  fedge export --model imaging --input-shape 64,64,3 --classes 7 --batch-size 8 \\
      --out derm.tflite --optimizer adam
  fedge export --model mlp --schema schema.toml --classes 2 --batch-size 32 --out mlp.tflite
  fedge export --model mlp --schema shared.toml --classes 2 --batch-size 32 --out mlp.tflite \\
      --class-weights balanced
  fedge export --model cnn1d --input-shape 6,100 --classes 4 --batch-size 32 \\
      --out cnn1d.tflite --optimizer adam
  fedge export --from-state /var/lib/fedge-aggregator --version 20 --out v20.tflite
  fedge export --from-state /var/lib/fedge-aggregator --out final-int8.tflite \\
      --inference-int8 --representative calibration.csv --client-state ward-7-state
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_client.errors import FedgeError
from edge_client.schema import load_schema
from models import zoo
from tools.export.class_weights import class_weights
from tools.export.from_state import export_from_state
from tools.export.int8 import SAME_FILE, Calibration, int8_model
from tools.extras import MissingExtra, require
from tools.schema.view import render_schema

__doc__ = (__doc__ or "").replace(
    "{zoo_shapes}", "\n".join(f"  {name:8} {zoo.SHAPES[name]}" for name in zoo.NAMES))

HELP = "write a trainable .tflite (zoo or Keras model, or a state dir's weights) or an int8 one"
ZOO_FLAGS = ("model", "input_shape", "classes", "batch_size")
KERAS_ONLY = ("loss",)
LOSSES = ("binary_crossentropy", "sparse_categorical_crossentropy", "mean_squared_error")


class UsageError(Exception):
    """A flag or input file is wrong; the message tells the user what to fix."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to a ``fedge`` sub-parser collection."""
    parser = subparsers.add_parser("export", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run)
    result: argparse.ArgumentParser = parser
    return result


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    z = parser.add_argument_group("from the model zoo (needs fedge[author])")
    z.add_argument("--model", choices=zoo.NAMES, help="zoo model")
    z.add_argument(
        "--input-shape", type=_shape, metavar="SHAPE",
        help="per-example input shape, comma-separated: 30 (logreg, mlp), "
        "CHANNELS,TIME (cnn1d, e.g. 6,100), HEIGHT,WIDTH[,CHANNELS] (cnn2d, e.g. 28,28), "
        "HEIGHT,WIDTH,CHANNELS (imaging, e.g. 64,64,3)",
    )  # fmt: skip
    z.add_argument("--schema", type=Path, metavar="TOML", help="the federation's data schema "
                   "(`fedge schema infer`): sets the input width (instead of --input-shape) "
                   "and is carried in the model file for the devices")
    z.add_argument("--classes", type=int, metavar="K",
                   help="0 = regression, 2 = binary, K >= 3 = multiclass")
    z.add_argument("--batch-size", type=int, metavar="B",
                   help="fixed batch size of the training signatures")
    z.add_argument("--optimizer", choices=("sgd", "adam"), help="default: sgd")
    z.add_argument("--class-weights", choices=("balanced", "none"), help="weight the "
                   "training loss by class: balanced = N / (K * N[c]) from --class-counts or "
                   "the schema's label counts; default: none")
    z.add_argument("--class-counts", type=_counts, metavar="N0,N1,...", help="rows per class "
                   "for --class-weights balanced (default: the --schema's label counts)")
    z.add_argument("--seed", type=int, metavar="N",
                   help="seed of the initial weights (default: 0)")
    z.add_argument("--dp-sgd", action="store_true", help="also export the train_dp signature: "
                   "record-level DP-SGD (per-example gradient clipping, device-drawn noise; "
                   "builtin ops only, the batch unrolled: slower to convert and to train); "
                   "docs/privacy.md")
    z.add_argument("--weights", type=Path, metavar="FILE.npz",
                   help="weights for the int8 model, by name (default: the initial ones)")
    z.add_argument("--hidden", type=_shape, metavar="W1,W2,...",
                   help="mlp: hidden layer widths (default: 32,16)")
    z.add_argument("--dropout", type=float, metavar="RATE",
                   help="mlp: dropout after each hidden layer, in [0, 1) (default: 0)")
    z.add_argument("--lr", type=float, metavar="RATE", help="the default learning rate the "
                   "file carries (default: the Keras model's, else 0.01 sgd / 0.001 adam)")
    k = parser.add_argument_group("from a saved Keras 3 model (needs fedge[author])")
    k.add_argument("--keras", type=Path, metavar="MODEL.keras", help="the model to export "
                   "with its weights; give --batch-size; --classes, if given, is checked")
    k.add_argument("--loss", choices=(*LOSSES, "mse"), help="the task loss (default: the "
                   "model's compile config; needed if the model is not compiled)")
    s = parser.add_argument_group("from an aggregator's state dir (no TensorFlow needed)")
    s.add_argument("--from-state", type=Path, metavar="DIR", help="the run's model and the "
                   "weights of --version (default: final, else the latest checkpoint)")
    s.add_argument("--version", type=int, metavar="N", help="a checkpoint of --from-state")
    o = parser.add_argument_group("output")
    o.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="the .tflite to write (with --from-state, FILE.npz writes the weights)")
    o.add_argument("--inference-int8", nargs="?", const=SAME_FILE, type=Path, metavar="OUT",
                   help="an int8 inference model (needs fedge[author]): to --out, or given "
                   "OUT, to OUT besides the trainable --out")
    o.add_argument("--representative", type=Path, metavar="DATA", help="int8 calibration "
                   "examples: .npz with x, or .csv (a 'label' column is left out); default: "
                   "256 standard-normal examples (for standardised inputs)")
    o.add_argument("--client-state", type=Path, metavar="DIR", help="standardise the "
                   "--representative examples with this fedge-client state dir's statistics")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: give positive integers separated by commas, e.g. 6,100"
        ) from None
    if any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: every size must be at least 1")
    return shape


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad counts {text!r}: give one whole number per class, comma-separated, e.g. "
            "480,20") from None
    if any(c < 0 for c in counts):
        raise argparse.ArgumentTypeError(f"bad counts {text!r}: counts cannot be negative")
    return counts


def run(args: argparse.Namespace) -> int:
    """Run ``fedge export`` with parsed arguments; return the exit status."""
    try:
        _check_flags(args)
        if args.from_state is not None:
            written = export_from_state(args.from_state, args.version, args.out,
                                        args.inference_int8, _calibration(args))
        elif args.keras is not None:
            written = _export_keras(args)
        else:
            written = _export_zoo(args)
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 2
    except (UsageError, ValueError, FedgeError) as exc:
        print(f"fedge export: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"fedge export: failed: {exc}", file=sys.stderr)
        return 1
    for line in written:
        print(line)
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    if args.keras is not None:
        _check_keras_flags(args)
        return
    if args.loss is not None:
        raise UsageError("--loss is for --keras MODEL.keras (a zoo model's loss follows "
                         "--classes)")
    own = (*ZOO_FLAGS, "optimizer", "seed", "weights", "schema", "class_weights",
           "class_counts", "hidden", "dropout", "lr")
    given = [f"--{f.replace('_', '-')}" for f in own if getattr(args, f) is not None]
    if args.from_state is not None:
        given += ["--dp-sgd"] if args.dp_sgd else []
        if given:
            raise UsageError(f"--from-state takes the model and weights from the state dir; "
                             f"leave out {', '.join(given)}")
        if args.out.suffix.lower() == ".npz" and args.inference_int8 is not None:
            raise UsageError("--out FILE.npz writes weights; an int8 model needs a .tflite")
        return
    if args.version is not None:
        raise UsageError("--version N picks a checkpoint of --from-state DIR; give both")
    if args.schema is not None:
        if args.input_shape is not None:
            raise UsageError("--schema sets the input width; leave out --input-shape")
        args.input_shape = _schema_width(args)
    missing = [f"--{f.replace('_', '-')}" for f in ZOO_FLAGS if getattr(args, f) is None]
    if missing:
        raise UsageError(f"give {', '.join(missing)} (a zoo model), --keras MODEL.keras, or "
                         "--from-state DIR (a run's model and weights)")
    if args.out.suffix.lower() == ".npz":
        raise UsageError("--out FILE.npz (the weights) needs --from-state DIR")


def _check_keras_flags(args: argparse.Namespace) -> None:
    others = [f"--{f.replace('_', '-')}" for f in ("model", "input_shape", "seed", "weights",
                                                   "hidden", "dropout", "from_state", "version",
                                                   "schema", "class_weights", "class_counts")
              if getattr(args, f) is not None] + (["--dp-sgd"] if args.dp_sgd else [])
    if others:
        raise UsageError(f"--keras takes the layers, shape and weights from the model (and "
                         f"trains without DP-SGD or class weights for now); leave out "
                         f"{', '.join(others)}")
    if args.batch_size is None:
        raise UsageError("--keras needs --batch-size B (the file's fixed batch size)")
    if args.out.suffix.lower() == ".npz":
        raise UsageError("--out FILE.npz (the weights) needs --from-state DIR")


def _export_keras(args: argparse.Namespace) -> list[str]:
    if not args.keras.is_file():
        raise UsageError(f"--keras {args.keras}: no such file")
    require("fedge export --keras", "tensorflow")
    from models import export, keras_import  # TensorFlow: only now

    imported = keras_import.load(args.keras, loss=args.loss, classes=args.classes)
    written = []
    if args.inference_int8 is not None:
        examples = _calibration(args).examples(imported.spec.input_shape)
        blob = export.export_spec_int8(imported.spec, imported.weights, examples,
                                       constants=imported.constants)
        target = args.out if args.inference_int8 == SAME_FILE else args.inference_int8
        target.write_bytes(blob)
        written.append(f"wrote {target} ({len(blob):,} bytes, int8, the Keras model's weights)")
        if args.inference_int8 == SAME_FILE:
            return written
    optimizer = args.optimizer or imported.optimizer or "sgd"
    hyperparameters = imported.hyperparameters if optimizer == imported.optimizer else {}
    rate = args.lr if args.lr is not None else (
        imported.learning_rate if optimizer == imported.optimizer else None)
    data = _devices_accept(export.export_model(
        imported.spec, args.batch_size, imported.weights, imported.constants, optimizer, None,
        rate, hyperparameters=hyperparameters),
        f"--keras {args.keras} --batch-size {args.batch_size}")
    args.out.write_bytes(data)
    frozen = imported.spec.frozen_weight_shapes()
    note = f", {len(frozen)} frozen tensors kept on the device" if frozen else ""
    return [*written, f"wrote {args.out} ({len(data):,} bytes; {imported.spec.name}: "
            f"{len(imported.spec.layers)} layers, {imported.spec.task}, "
            f"{len(imported.weights)} travelling tensors{note})"]


def _devices_accept(data: bytes, what: str) -> bytes:
    """``data`` if a device's model checks would load it, else a clear refusal.

    Raises:
        UsageError: a bound of :mod:`edge_client.model_check` is broken (the message says
            which); a smaller --batch-size shrinks a file's tensors in proportion.
    """
    from edge_client.errors import ModelError
    from edge_client.model_check import check_model_file

    try:
        check_model_file(data)
    except ModelError as exc:
        raise UsageError(f"{what}: devices would refuse this file: {exc} (the tensors grow "
                         "with --batch-size: a smaller one shrinks them)") from exc
    return data


def _schema_width(args: argparse.Namespace) -> tuple[int, ...]:
    schema = load_schema(args.schema)
    expected = len(schema.classes) if schema.classes else 0
    if args.classes is not None and args.classes != expected:
        kind = f"{expected} classes" if expected else "a regression target (0)"
        raise UsageError(f"--classes {args.classes}: the schema's label {schema.label!r} has "
                         f"{kind}")
    args.schema_doc = schema
    return (len(schema.encoded_names),)


def _calibration(args: argparse.Namespace) -> Calibration:
    if args.representative is not None and args.inference_int8 is None:
        raise UsageError("--representative calibrates the int8 model: add --inference-int8")
    if args.client_state is not None and (args.representative is None
                                          or args.inference_int8 is None):
        raise UsageError("--client-state standardises the --representative examples of "
                         "--inference-int8; give both")
    return Calibration(args.representative, args.client_state)


def _export_zoo(args: argparse.Namespace) -> list[str]:
    dropout = args.dropout or 0.0
    spec = zoo.build(args.model, args.input_shape, args.classes, hidden=args.hidden,
                     dropout=dropout)  # fail before TF loads
    schema = getattr(args, "schema_doc", None)
    loss_weights = class_weights(args.class_weights, args.class_counts, schema, args.classes)
    int8_weights = None
    if args.inference_int8 is not None and args.weights is not None:
        int8_weights = _load_weights(args.weights)
    calibration = _calibration(args)
    require("fedge export", "tensorflow")
    from models import export  # TensorFlow takes seconds to import; only now is it needed

    seed = 0 if args.seed is None else args.seed
    written = []
    if args.inference_int8 is not None:
        if spec.layers != zoo.build(spec.name, spec.input_shape, spec.classes).layers:
            raise UsageError("--inference-int8 takes the zoo model's default layers: leave out "
                             "--hidden and --dropout")
        weights = int8_weights or zoo.initial_weights(spec, seed)
        blob = int8_model(spec.name, spec.input_shape, spec.classes, weights, calibration)
        target = args.out if args.inference_int8 == SAME_FILE else args.inference_int8
        target.write_bytes(blob)
        written.append(f"wrote {target} ({len(blob):,} bytes, int8)")
        if args.inference_int8 == SAME_FILE:
            return written
    data = _devices_accept(export.export_trainable(
        args.model, args.input_shape, args.classes, args.batch_size, args.optimizer or "sgd",
        seed, learning_rate=args.lr, hidden=args.hidden, dropout=dropout, dp_sgd=args.dp_sgd,
        schema=None if schema is None else schema.to_dict(), class_weights=loss_weights),
        f"--model {args.model} --batch-size {args.batch_size}")
    args.out.write_bytes(data)
    shown = [] if schema is None else [render_schema(schema)]
    if loss_weights is not None:
        shown.append("class weights (training loss): "
                      + ", ".join(f"{w:.4g}" for w in loss_weights))
    return [*written, f"wrote {args.out} ({len(data):,} bytes)", *shown]


def _load_weights(path: Path) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m tools.export.command``."""
    parser = argparse.ArgumentParser(prog="fedge export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
