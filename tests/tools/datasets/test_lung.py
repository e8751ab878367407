"""``ncctg-lung``: the clinical table read from the lifelines wheel's CSV, offline, without
importing lifelines; sites are whole institutions; categories and missing cells go through
the schema the way a device reads them."""

from __future__ import annotations

import csv
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_client.encode import load_schema_csv
from edge_client.errors import ConfigError
from tools.datasets import load_dataset
from tools.datasets.lung import (
    OUTCOME,
    SCHEMA,
    SITE_COLUMN,
    deal_institutions,
    lung_csv,
    lung_rows,
    lung_sites,
    shared_lung_schema,
    write_csv,
)


def test_the_packaged_file_is_read_offline_without_importing_lifelines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ncctg-lung tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delitem(sys.modules, "lifelines", raising=False)
    with lung_csv().open() as f:
        raw = list(csv.DictReader(f))
    rows = lung_rows()
    assert "lifelines" not in sys.modules
    assert len(raw) == 228  # the NCCTG trial's patients
    censored_early = [r for r in raw if float(r["time"]) <= 365 and r["status"] == "0"]
    assert len(rows) == len(raw) - len(censored_early)
    deaths = sum(float(r["time"]) <= 365 and r["status"] == "1" for r in raw)
    assert sum(r[OUTCOME] == "yes" for r in rows) == deaths
    # the real table's awkward parts are there: missing cells and text categories
    assert sum(r["meal.cal"] == "" for r in rows) > 20
    assert {r["sex"] for r in rows} == {"male", "female"}
    assert {r["ph.ecog"] for r in rows} <= {"0", "1", "2", "3", ""}


def test_sites_are_whole_institutions_and_every_row_is_used_once() -> None:
    rows = lung_rows()
    dealt = deal_institutions(rows, 4)
    institutions = [i for site in dealt for i in site]
    assert sorted(institutions) == sorted({r[SITE_COLUMN] for r in rows})  # each once
    sites = lung_sites(0)
    sizes = [len(s.train) + len(s.test) for s in sites]
    assert sum(sizes) == len(rows) and max(sizes) - min(sizes) <= 30  # the largest is 30
    for s in sites:
        assert {r[SITE_COLUMN] for r in (*s.train, *s.test)} == set(s.institutions)
        assert 0.15 <= len(s.test) / (len(s.train) + len(s.test)) <= 0.35
    assert [s.test for s in lung_sites(0)] == [s.test for s in sites]
    assert [s.test for s in lung_sites(1)] != [s.test for s in sites]
    with pytest.raises(ConfigError, match="sites must be 1 to"):
        lung_sites(0, sites=40)


def test_site_files_read_onto_the_schema_with_the_federated_fills(tmp_path: Path) -> None:
    sites = lung_sites(0)
    paths = [write_csv(tmp_path / f"{s.name}.csv", s.train) for s in sites]
    shared = shared_lung_schema(paths)
    pooled = [float(r["meal.cal"]) for s in sites for r in s.train if r["meal.cal"]]
    meal = next(f for f in shared.features if f.name == "meal.cal")
    assert meal.fill == pytest.approx(np.mean(pooled), rel=1e-9) and shared.shared_scaling
    assert shared.class_counts == tuple(
        sum(r[OUTCOME] == c for s in sites for r in s.train) for c in SCHEMA.classes)
    data = load_schema_csv(paths[0], shared).data
    names = list(data.feature_names)
    missing = [r["meal.cal"] == "" for r in sites[0].train]
    np.testing.assert_array_equal(data.x[:, names.index("meal.cal_missing")], missing)
    assert np.all(data.x[missing, names.index("meal.cal")] == np.float32(meal.fill))
    one_hot = data.x[:, [names.index("sex=male"), names.index("sex=female")]]
    assert np.all(one_hot.sum(axis=1) == 1)


def test_the_registered_dataset_has_the_sites_as_natural_groups() -> None:
    data = load_dataset("ncctg-lung", seed=0)
    assert data.info.model == "logreg" and data.info.classes == ("no", "yes")
    assert data.x_train.shape[1] == len(SCHEMA.encoded_names) and not np.isnan(data.x_train).any()
    assert data.groups_train is not None and set(data.groups_train) == {0, 1, 2, 3}
    assert len(data.y_train) + len(data.y_test) == len(lung_rows())
