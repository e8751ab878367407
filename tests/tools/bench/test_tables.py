"""``fedge bench tables``: the two scalings really differ the way the section says, and one
seed runs end to end into the rendered table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.bench import tables
from tools.datasets.lung import lung_sites, shared_lung_schema, write_csv


def _files(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    split = lung_sites(0)
    return ([write_csv(tmp_path / f"{s.name}.csv", s.train) for s in split],
            [write_csv(tmp_path / f"{s.name}-t.csv", s.test) for s in split])


def test_shared_scaling_centres_the_federation_and_per_site_each_site(tmp_path: Path) -> None:
    train, test = _files(tmp_path)
    shared = shared_lung_schema(train)
    age = list(shared.encoded_names).index("age")
    arms = {name: tables.site_arrays(schema, train, test)
            for name, schema in (("shared", shared), ("per-site", tables.per_site(shared)))}
    site_means = {k: [float(s.x[:, age].mean()) for s in v] for k, v in arms.items()}
    assert max(map(abs, site_means["per-site"])) < 1e-5  # every site centred on itself
    pooled = np.concatenate([s.x[:, age] for s in arms["shared"]])
    assert abs(float(pooled.mean())) < 1e-5 and abs(float(pooled.std()) - 1) < 1e-4
    assert max(map(abs, site_means["shared"])) > 0.05  # the sites' case mixes differ
    for a, b in zip(arms["shared"], arms["per-site"], strict=True):  # same rows, same labels
        np.testing.assert_array_equal(a.y, b.y)
        one_hot = list(shared.encoded_names).index("sex=male")
        np.testing.assert_array_equal(a.x[:, one_hot], b.x[:, one_hot])  # 0/1 in both


@pytest.mark.slow
def test_one_seed_runs_every_method_and_renders_the_table() -> None:
    result = tables.run(quick=True)
    assert json.loads(json.dumps(result)) == result and result["seeds"] == [0]
    (run,) = result["runs"]
    keys = [key for _, key, _ in tables.ROWS]
    for key in keys:
        assert len(run[key]) == 3 and all(0.0 <= v <= 1.0 for v in run[key])
    assert len(run["sites"]) == 4 and min(run["sites"]) > 0  # every site trains
    text = tables.render(result)
    assert text.count("\n| ") == len(tables.ROWS) + 2  # header, rule, one row each
    for label in ("| shared | FedAvg |", "| per-site | FedAvg |", "pooled (centralised)",
                  "--class-weights balanced"):
        assert label in text
