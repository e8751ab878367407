"""``fedge export``: write a trainable .tflite file (and optionally an int8 one).

Examples::

    fedge export --model cnn1d --input-shape 6,100 --classes 4 --batch-size 32 \\
        --out cnn1d.tflite --optimizer adam
    fedge export --model logreg --input-shape 30 --classes 2 --batch-size 16 \\
        --out logreg.tflite --inference-int8 logreg-int8.tflite \\
        --representative train.npz --weights global.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models import zoo

Array = npt.NDArray[Any]
HELP = "export a zoo model as a self-describing .tflite file that trains on device"


class UsageError(Exception):
    """A flag or input file is wrong; the message tells the user what to fix."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to a ``fedge`` sub-parser collection."""
    parser = subparsers.add_parser("export", help=HELP, description=HELP)
    _add_arguments(parser)
    parser.set_defaults(func=run)
    result: argparse.ArgumentParser = parser
    return result


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=zoo.NAMES, help="zoo model")
    parser.add_argument(
        "--input-shape", required=True, type=_shape, metavar="SHAPE",
        help="per-example input shape, comma-separated: 30 (logreg, mlp), "
        "CHANNELS,TIME (cnn1d, e.g. 6,100), HEIGHT,WIDTH (cnn2d, e.g. 28,28)",
    )  # fmt: skip
    parser.add_argument(
        "--classes", required=True, type=int, metavar="K",
        help="0 = regression, 2 = binary, K >= 3 = multiclass",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", required=True, type=int, metavar="B",
        help="fixed batch size of the training signatures",
    )  # fmt: skip
    parser.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="trainable .tflite file to write"
    )
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="default: sgd")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the initial weights (default: 0)"
    )
    parser.add_argument(
        "--inference-int8", type=Path, metavar="OUT",
        help="also write an int8-quantized inference model (needs --representative)",
    )  # fmt: skip
    parser.add_argument(
        "--representative", type=Path, metavar="FILE.npz",
        help="calibration examples: an .npz whose array 'x' (or only array) is (N, *input-shape)",
    )  # fmt: skip
    parser.add_argument(
        "--weights", type=Path, metavar="FILE.npz",
        help="weights for the int8 model, by name (default: the trainable model's initial ones)",
    )  # fmt: skip


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


def run(args: argparse.Namespace) -> int:
    """Run ``fedge export`` with parsed arguments; return the exit status."""
    try:
        _export(args)
    except (UsageError, ValueError) as exc:
        print(f"fedge export: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"fedge export: failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> None:
    spec = zoo.build(args.model, args.input_shape, args.classes)  # fail before TF loads
    int8_inputs = _int8_inputs(args, spec) if args.inference_int8 is not None else None
    from models import export  # TensorFlow takes seconds to import; only now is it needed

    data = export.export_trainable(
        args.model, args.input_shape, args.classes, args.batch_size, args.optimizer, args.seed
    )
    if int8_inputs is not None:
        int8 = export.export_inference_int8(
            args.model, args.input_shape, args.classes, *int8_inputs
        )
        args.inference_int8.write_bytes(int8)
        print(f"wrote {args.inference_int8} ({len(int8):,} bytes, int8)")
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data):,} bytes)")


def _int8_inputs(args: argparse.Namespace, spec: zoo.ModelSpec) -> tuple[dict[str, Array], Array]:
    if args.representative is None:
        raise UsageError("--inference-int8 needs --representative FILE.npz")
    examples = _representative(_load_npz(args.representative), args.representative)
    if args.weights is None:
        return zoo.initial_weights(spec, args.seed), examples
    return _load_npz(args.weights), examples


def _load_npz(path: Path) -> dict[str, Array]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _representative(arrays: dict[str, Array], path: Path) -> Array:
    if "x" in arrays:
        return arrays["x"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise UsageError(f"{path} holds arrays {sorted(arrays)}; name the examples 'x'")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m tools.export``."""
    parser = argparse.ArgumentParser(prog="fedge export", description=HELP)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
