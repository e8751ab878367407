"""``fedge export`` (tools/export.py): files written, and clear errors for bad flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from models import metadata
from tools import export as cli

BASE = ["--model", "logreg", "--input-shape", "4", "--classes", "2", "--batch-size", "4"]


def test_export_writes_a_trainable_file_described_by_its_flags(tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    assert cli.main([*BASE, "--out", str(out), "--optimizer", "adam", "--seed", "3"]) == 0
    meta = metadata.read(out.read_bytes())
    assert (meta["model"], meta["input"]["shape"], meta["classes"]) == ("logreg", [4], 2)
    assert (meta["batch_size"], meta["optimizer"]["name"], meta["seed"]) == (4, "adam", 3)


def test_export_also_writes_an_int8_model_from_given_weights(tmp_path: Path) -> None:
    np.savez(tmp_path / "rep.npz", x=np.random.default_rng(0).normal(size=(20, 4)))
    weights = {"dense0_kernel": np.ones((4, 1), np.float32), "dense0_bias": np.zeros(1, np.float32)}
    np.savez(tmp_path / "w.npz", **weights)
    files = {name: str(tmp_path / name) for name in ("m.tflite", "q.tflite", "rep.npz", "w.npz")}
    args = ["--out", files["m.tflite"], "--inference-int8", files["q.tflite"]]
    extra = ["--representative", files["rep.npz"], "--weights", files["w.npz"]]
    assert cli.main(BASE + args + extra) == 0
    assert metadata.read((tmp_path / "q.tflite").read_bytes())["quantization"] == "int8"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--input-shape", "6x100"], "bad shape '6x100': give positive integers separated by"),
        (["--input-shape", "6,0"], "every size must be at least 1"),
        (["--model", "resnet"], "invalid choice: 'resnet'"),
        (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    ],
)
def test_bad_flags_exit_with_usage_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*BASE, "--out", str(tmp_path / "m.tflite"), *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "cnn1d", "--input-shape", "6,8"], "cnn1d cannot take input shape (6, 8)"),
        (["--classes", "1"], "classes must be 0 (regression), 2 (binary) or at least 3"),
        (["--batch-size", "0"], "batch size must be a positive integer"),
        (["--inference-int8", "q.tflite"], "--inference-int8 needs --representative FILE.npz"),
        (["--inference-int8", "q.tflite", "--representative", "nope.npz"], "cannot read nope.npz"),
    ],
)
def test_impossible_requests_fail_with_a_reason_and_write_nothing(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.tflite"
    assert cli.main([*BASE, "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_add_parser_registers_the_export_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="fedge")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", *BASE, "--out", "m.tflite"])
    assert args.func is cli.run and args.input_shape == (4,) and args.optimizer == "sgd"
