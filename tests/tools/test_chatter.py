"""Third-party chatter (tools/chatter.py): what is dropped, what is kept, and that commands
using TensorFlow print none of it unless --verbose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools.chatter import NATIVE_CHATTER

ROOT = Path(__file__).resolve().parents[2]
# lines TensorFlow 2.21, TFLite and the converter printed in this project's runs
CHATTER = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796186570.072132   26515 port.cc:153] oneDNN custom operations are on. You "
    b"may see slightly different numerical results due to floating-point round-off errors "
    b"from different computation orders. To turn them off, set the environment variable "
    b"`TF_ENABLE_ONEDNN_OPTS=0`.",
    b"I0000 00:00:1796187571.320025    6242 cpu_feature_guard.cc:227] This TensorFlow binary "
    b"is optimized to use available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other "
    b"operations, rebuild TensorFlow with the appropriate compiler flags.",
    b"W0000 00:00:1796187301.166229    2896 tf_tfl_flatbuffer_helpers.cc:364] Ignored "
    b"output_format.",
    b"2024-05-01 10:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
    b"output_inference_type: FLOAT32",
]
KEPT = [
    b"E0000 00:00:1796187301.166229    2896 cuda_dnn.cc:8579] Unable to register cuDNN factory",
    b"F0000 00:00:1796187301.166229    2896 check.cc:12] Check failed: x == y",
    b"Traceback (most recent call last):",
    b"fedge export: error: bad shape '6x100'",
    b"2026-12-02 05:02:07,515 INFO tools.runtime.federation: broker: mosquitto on mqtt://x",
]


@pytest.mark.parametrize("line", CHATTER)
def test_native_chatter_is_recognised(line: bytes) -> None:
    assert NATIVE_CHATTER.fullmatch(line)


@pytest.mark.parametrize("line", KEPT)
def test_errors_and_fedges_own_lines_are_kept(line: bytes) -> None:
    assert not NATIVE_CHATTER.fullmatch(line)


WRITER = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from tools.chatter import filtered_native_stderr
with filtered_native_stderr():
    for line in sys.argv[2:]:
        os.write(2, line.encode() + b"\n")  # as native code writes: to the descriptor
    print("python", file=sys.stderr)
    os.write(2, b"partial")
print("after", file=sys.stderr)
"""


def test_the_filter_drops_native_chatter_and_passes_everything_else() -> None:
    lines = [CHATTER[1].decode(), "kept 1", CHATTER[6].decode(), "kept 2"]
    done = subprocess.run([sys.executable, "-c", WRITER, str(ROOT), *lines],
                          capture_output=True, timeout=60)
    assert done.returncode == 0
    err = done.stderr.decode()
    lines = err.splitlines()  # Python's and native lines reach stderr by two paths: any order
    kept = [line for line in lines if line.startswith("kept")]
    assert kept == ["kept 1", "kept 2"] and "python" in lines and err.endswith("after\n")
    assert "partial" in err and "oneDNN" not in err and "XNNPACK" not in err


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if NATIVE_CHATTER.fullmatch(line.encode()) or "oneDNN" in line or "absl" in line]


@pytest.mark.slow  # two real exports with TensorFlow
def test_export_prints_no_tensorflow_banners_unless_verbose(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "tools", "export", "--model", "logreg", "--input-shape", "4",
            "--classes", "2", "--batch-size", "4", "--out", str(tmp_path / "m.tflite")]
    quiet = subprocess.run([*args, "--inference-int8", str(tmp_path / "q.tflite")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert _noise(quiet.stderr) == []
    assert quiet.stderr.strip().startswith("fedge export: note: no --representative")
    verbose = subprocess.run([*args, "--verbose"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert verbose.returncode == 0
    assert _noise(verbose.stderr), "--verbose shows TensorFlow's own lines"
