"""``fedge check-model FILE.tflite``: does this model train on the plain TFLite runtime?

Any .tflite file, fedge's or not. First the operators are read from the flatbuffer
(bounds-checked, no interpreter): every op is listed, and a Flex (Select TF) or other
custom op fails the check by name, since tflite_runtime and ai_edge_litert have no Flex
delegate. Then a child process in which TensorFlow cannot be imported loads the file
with tflite_runtime (or --runtime), runs one ``train`` step on a random batch, times
further steps (one thread), does a ``get_weights``/``set_weights`` round trip, and
reports its peak resident memory.

exit codes:
  0  the model trains on the plain runtime
  1  it does not: custom/Flex ops (named), a fedge file that fedge-client would refuse
     (a bound of its model checks, named), a missing train/get_weights/set_weights
     signature, a failed step or round trip, or the runtime crashed (signal named)
  2  usage error: no such file, or not a TFLite model

example:
  fedge check-model cnn1d.tflite
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge_client.errors import FedgeError
from edge_client.flatbuffer import CUSTOM, operator_codes
from edge_client.model_check import check_model_file
from edge_client.model_file import archive_start
from edge_client.runtime import ENV_VAR
from tools.check.opnames import op_name

HELP = "check that a .tflite trains on the plain TFLite runtime (ops, one step, weights)"
TIMEOUT_S = 600.0  # a large model's first step; a hang fails the check


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``check-model`` sub-command to a ``fedge`` sub-parser collection."""
    parser = subparsers.add_parser("check-model", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run)
    result: argparse.ArgumentParser = parser
    return result


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.tflite", help="the model to check")
    parser.add_argument("--runtime", choices=("tflite_runtime", "ai_edge_litert"),
                        default="tflite_runtime",
                        help="the plain runtime to train with (default: tflite_runtime)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON "
                        "object instead of lines")


def operators(data: bytes) -> tuple[list[str], list[str]]:
    """The builtin op names and the custom op names of a model file's flatbuffer."""
    try:
        flatbuffer = data[:archive_start(data)]
    except FedgeError:
        flatbuffer = data
    codes = operator_codes(flatbuffer)
    builtin = sorted({op_name(code) for code, custom in codes if code != CUSTOM and not custom})
    custom = sorted({custom or "CUSTOM (unnamed)" for code, custom in codes
                     if code == CUSTOM or custom})
    return builtin, custom


def _fedge_refusal(data: bytes) -> str | None:
    """Why fedge-client and fedge-aggregator would refuse a fedge model file (its bounds and
    metadata, :mod:`edge_client.model_check`); None when they would load it or it is not
    a fedge file (no metadata archive)."""
    try:
        archive_start(data)
    except FedgeError:
        return None
    try:
        check_model_file(data)
    except FedgeError as exc:
        return f"fedge devices and the aggregator refuse this file: {exc}"
    return None


def _device_run(path: Path, runtime: str) -> dict[str, Any]:
    env = {**os.environ, ENV_VAR: runtime, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "tools.check.device", str(path)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return {"error": f"the runtime crashed ({name}): {done.stderr.strip()[-300:]}"}
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": f"the device run printed no result: {done.stderr.strip()[-300:]}"}
    return result


def check_model(path: Path, runtime: str) -> tuple[int, dict[str, Any]]:
    """Run every check on ``path``; the exit code and the results."""
    data = path.read_bytes()
    builtin, custom = operators(data)
    results: dict[str, Any] = {"file": str(path), "ops": builtin, "custom_ops": custom}
    if custom:
        results["error"] = (f"needs non-builtin ops {', '.join(custom)}: the plain TFLite "
                            "runtime has no Flex delegate or custom kernels")
        return 1, results
    refusal = _fedge_refusal(data)
    if refusal is not None:
        results["error"] = refusal
        return 1, results
    results.update(_device_run(path, runtime))
    return (1 if "error" in results else 0), results


def _print(results: dict[str, Any]) -> None:
    print(f"{results['file']}: {len(results['ops'])} builtin ops: {', '.join(results['ops'])}")
    print(f"custom ops: {', '.join(results['custom_ops']) or 'none'}")
    if "error" in results:
        print(f"FAIL: {results['error']}")
        return
    print(f"runtime: {results['runtime']} (TensorFlow cannot be imported in the check process)")
    print(f"train: one step ok (loss {results['loss']:.4g}); step time "
          f"{results['step_ms']:.3f} ms (median of {results['steps_timed']}, one thread)")
    print(f"get_weights/set_weights: round trip ok ({results['weights']} tensors)")
    print(f"peak memory: {results['peak_rss_mb']:.1f} MB (resident, the check process)")
    print("OK: trains on the plain TFLite runtime")


def run(args: argparse.Namespace) -> int:
    """Run ``fedge check-model`` with parsed arguments; return the exit status."""
    if not args.file.is_file():
        print(f"fedge check-model: error: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        code, results = check_model(args.file, args.runtime)
    except FedgeError as exc:  # not a TFLite flatbuffer at all
        print(f"fedge check-model: error: {args.file}: {exc}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired:
        code, results = 1, {"file": str(args.file), "ops": [], "custom_ops": [],
                            "error": f"the device run took over {TIMEOUT_S:.0f} s"}
    if args.json:
        print(json.dumps(results))
    else:
        _print(results)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m tools.check.command``."""
    parser = argparse.ArgumentParser(prog="fedge check-model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
