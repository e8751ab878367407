"""The shared schema ``fedge stats --out`` writes: label class counts, unless one is small."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_client.errors import ConfigError
from edge_client.feature_stats import Combined
from edge_client.schema import Feature, Schema, load_schema, schema_toml
from tools.stats import shared_schema

SCHEMA = Schema((Feature("age", low=20.0, high=90.0),), "outcome", ("no", "yes"))


def _label(bins: tuple[int, ...]) -> Combined:
    return Combined("outcome", False, 2, sum(bins), 0, 0.0, 0.0, 0.0, 0.0, bins)


@pytest.mark.parametrize(("bins", "counts"), [((120, 14, 0), (120, 14)),
                                              ((120, 9, 0), ()), ((120, 0, 0), (120, 0))])
def test_label_counts_are_written_unless_one_is_suppressed(
        bins: tuple[int, ...], counts: tuple[int, ...]) -> None:
    shared = shared_schema(SCHEMA, [_label(bins)], min_count=10)
    assert shared.class_counts == counts


def test_label_counts_survive_the_toml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(schema_toml(shared_schema(SCHEMA, [_label((120, 14, 0))])))
    assert load_schema(path).class_counts == (120, 14)
    path.write_text(path.read_text().replace("counts = [120, 14]", "counts = [120]"))
    with pytest.raises(ConfigError, match="label counts must be one count >= 0 per class"):
        load_schema(path)


def test_scaling_is_kept_in_the_toml_and_checked(tmp_path: Path) -> None:
    from dataclasses import replace

    path = tmp_path / "s.toml"
    path.write_text(schema_toml(replace(SCHEMA, scaling="shared")))
    assert load_schema(path).scaling == "shared"
    assert load_schema(path).to_dict()["scaling"] == "shared"
    assert "scaling" not in SCHEMA.to_dict()  # the default leaves model metadata as before
    path.write_text(path.read_text().replace('scaling = "shared"', 'scaling = "global"'))
    with pytest.raises(ConfigError, match="scaling must be one of"):
        load_schema(path)
