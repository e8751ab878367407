"""Client configuration: TOML, flags win over it, secrets only from the environment or a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_client.__main__ import build_parser
from edge_client.config import ClientConfig, build_config
from edge_client.errors import ConfigError


def _config(tmp_path: Path, toml: str, *flags: str, env: dict[str, str] | None = None
            ) -> ClientConfig:
    path = tmp_path / "client.toml"
    path.write_text(toml)
    return build_config(build_parser().parse_args(["--config", str(path), *flags]), env or {})


def test_flags_win_over_the_file_and_the_password_comes_from_the_environment(
        tmp_path: Path) -> None:
    c = _config(tmp_path, '[client]\nbroker = "mqtt://a:1"\nlabel-column = "y"\nthreads = 2\n',
                "--broker", "mqtt://b:2", env={"FEDGE_PASSWORD": "s3cret"})
    assert (c.broker, c.label_column, c.threads, c.password) == (  # type: ignore[attr-defined]
        "mqtt://b:2", "y", 2, "s3cret")


@pytest.mark.parametrize(("toml", "message"), [
    ('password = "x"\n', "FEDGE_PASSWORD"),
    ('colour = "blue"\n', "unknown key 'colour'"),
    ("client = 5\n", r"\[client\] must be a table"),
    ("threads = 0\n", "--threads: expected a whole number >= 1"),
    ('password-file = "/pw"\n', "FEDGE_PASSWORD"),
    ("once = 'yes'\n", "--once: expected true or false"),
    ("mqtt-version = 4\n", "--mqtt-version: expected one of 5, 3.1.1"),
    ("broker = 1883\n", "--broker: expected a non-empty string"),
    ("features = [1, 2]\n", "--features: expected a list of names"),
    ("broker = \n", "not valid TOML"),
])
def test_bad_files_are_clear_errors(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, toml)



def test_toml_keys_take_dashes_or_underscores_and_features_a_list_or_commas(
        tmp_path: Path) -> None:
    c = _config(tmp_path, 'label_column = "y"\nfeatures = ["a", "b"]\nstate-dir = "s"\n')
    assert (c.label_column, c.features, c.state_dir) == ("y", ("a", "b"), Path("s"))
    c = _config(tmp_path, "", "--features", "a,b", "--no-normalise", "--once")
    assert (c.features, c.normalise, c.once) == (("a", "b"), False, True)
