"""``fedge export`` (tools/export/): files written from the zoo and from a state dir, the int8
calibration fallback, and clear errors for bad flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from state_kit import write_state_dir

from edge_client.model import TrainableModel, embedded_weights, read_metadata
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
        (["--inference-int8", "q.tflite", "--representative", "nope.npz"], "nope.npz: no such"),
        (["--representative", "r.npz"], "--representative calibrates the int8 model: add "
         "--inference-int8"),
        (["--version", "3"], "--version N picks a checkpoint of --from-state DIR; give both"),
        (["--client-state", "d", "--inference-int8"], "--client-state standardises the "
         "--representative examples of --inference-int8; give both"),
        (["--class-weights", "balanced"], "--class-weights balanced needs the class "
         "frequencies: give --class-counts N0,N1,... or a --schema with the federation's"),
        (["--class-counts", "5,5"], "--class-counts sets balanced class weights: add "
         "--class-weights balanced"),
        (["--class-weights", "balanced", "--class-counts", "5,5,5"], "3 counts for 2 classes"),
        (["--class-weights", "balanced", "--class-counts", "5,0"], "every class needs at least "
         "one row"),
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
    assert args.func is cli.run and args.input_shape == (4,) and args.optimizer is None


def test_zoo_flags_are_required_without_a_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--model", "logreg", "--out", str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err
    assert "give --input-shape, --classes, --batch-size (a zoo model), --keras" in err


def test_without_representative_data_the_int8_model_is_calibrated_on_the_fallback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.tflite"
    assert cli.main([*BASE, "--out", str(out), "--inference-int8"]) == 0
    captured = capsys.readouterr()
    assert "calibrating the int8 model on 256 standard-normal examples" in captured.err
    assert metadata.read(out.read_bytes())["quantization"] == "int8"
    assert captured.out.count("wrote") == 1  # --inference-int8 alone: only the int8 model


def _trained(model_file: bytes, value: float) -> dict[str, np.ndarray]:
    return {w.name: np.full(w.shape, value, np.float32) for w in read_metadata(model_file).weights}


def test_from_state_embeds_the_final_or_any_versions_weights(
    tmp_path: Path, logreg_file: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    state = write_state_dir(tmp_path / "agg", logreg_file,
                            {v: _trained(logreg_file, v / 10) for v in range(3)})
    final, second = tmp_path / "final.tflite", tmp_path / "v1.tflite"
    assert cli.main(["--from-state", str(state), "--out", str(final)]) == 0
    assert final.read_bytes() == (state / "final" / "model.tflite").read_bytes()
    assert "trainable, logreg with the final weights (version 2) of" in capsys.readouterr().out
    assert cli.main(["--from-state", str(state), "--version", "1", "--out", str(second)]) == 0
    model = TrainableModel(second.read_bytes())
    assert all(np.all(v == np.float32(0.1)) for v in model.get_weights().values())
    npz = tmp_path / "w.npz"
    assert cli.main(["--from-state", str(state), "--version", "1", "--out", str(npz)]) == 0
    with np.load(npz) as archive:
        kept = {k: archive[k] for k in archive.files}
    embedded = embedded_weights(second.read_bytes())
    assert embedded is not None and list(kept) == list(embedded)
    assert all(np.array_equal(kept[k], embedded[k]) for k in kept)


def test_from_state_makes_an_int8_model_with_those_weights(
    tmp_path: Path, logreg_file: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    state = write_state_dir(tmp_path / "agg", logreg_file, {0: _trained(logreg_file, 0.3)})
    np.savez(tmp_path / "rep.npz", x=np.random.default_rng(0).normal(size=(20, 4)))
    out = tmp_path / "q.tflite"
    assert cli.main(["--from-state", str(state), "--out", str(out), "--inference-int8",
                     "--representative", str(tmp_path / "rep.npz")]) == 0
    assert metadata.read(out.read_bytes())["quantization"] == "int8"
    assert "int8 inference model, logreg with the final weights" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "logreg", "--seed", "2"], "--from-state takes the model and weights from "
         "the state dir; leave out --model, --seed"),
        (["--version", "9"], "no checkpoint of version 9"),
        (["--inference-int8", "--out", "w.npz"], "--out FILE.npz writes weights; an int8"),
    ],
)  # fmt: skip
def test_from_state_mistakes_name_the_flag(
    tmp_path: Path, logreg_file: bytes, capsys: pytest.CaptureFixture[str], flags: list[str],
    message: str
) -> None:
    state = write_state_dir(tmp_path / "agg", logreg_file, {0: _trained(logreg_file, 0.3)})
    out = ["--out", str(tmp_path / "m.tflite")] if "--out" not in flags else []
    code = cli.main(["--from-state", str(state), *out, *flags])
    assert code == 2
    assert message in capsys.readouterr().err


def test_balanced_class_weights_come_from_the_schemas_label_counts(tmp_path: Path) -> None:
    from edge_client.schema import Feature, Schema, schema_toml

    schema = Schema((Feature("age", low=0.0, high=100.0), Feature("bmi", low=10.0, high=60.0)),
                    "outcome", ("no", "yes"), class_counts=(90, 10))
    (tmp_path / "shared.toml").write_text(schema_toml(schema))
    out = tmp_path / "m.tflite"
    flags = ["--model", "logreg", "--schema", str(tmp_path / "shared.toml"), "--classes", "2",
             "--batch-size", "4", "--out", str(out), "--class-weights", "balanced"]
    assert cli.main(flags) == 0
    assert metadata.read(out.read_bytes())["class_weights"] == pytest.approx([100 / 180, 5.0])
    assert cli.main([*flags, "--class-counts", "30,70"]) == 0  # the flag wins over the schema
    assert metadata.read(out.read_bytes())["class_weights"] == pytest.approx([100 / 60, 100 / 140])
    assert cli.main([*BASE, "--out", str(out)]) == 0
    assert "class_weights" not in metadata.read(out.read_bytes())  # default: none


def test_class_counts_must_be_whole_numbers(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([*BASE, "--out", str(tmp_path / "m"), "--class-counts", "5,x"])
    assert "bad counts '5,x': give one whole number per class" in capsys.readouterr().err
