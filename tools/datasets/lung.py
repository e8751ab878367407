"""``ncctg-lung``: the NCCTG advanced lung cancer trial, one CSV per institution group.

The file ships inside the ``lifelines`` wheel (``lifelines/datasets/lung.csv``: 228
patients of the North Central Cancer Treatment Group, Loprinzi et al. 1994); it is found
through the installed distribution's file list and read with the csv module, so lifelines
itself (and its pandas code) is never imported and nothing is downloaded.

A real clinical table with what issue 16 is about: categorical columns (``sex``, the ECOG
performance score ``ph.ecog``), missing cells (``meal.cal`` in a fifth of the rows,
``wt.loss``, ``pat.karno``...), and a natural site variable: the treating institution
``inst``. The binary outcome is death within a year of enrolment (``death_1y``); the 42
patients censored (last seen alive) before a year are left out, their outcome unknown.
The institutions (18, from 1 to 30 patients) are kept whole and dealt, largest first, to
the site with the fewest patients so far: every site is a few real institutions, with their
own case mix (a non-IID split). Each site holds out a stratified share as its test rows.
"""

from __future__ import annotations

import csv
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_client.errors import ConfigError
from edge_client.schema import Feature, Schema
from tools.datasets.dataset import Dataset, DatasetInfo

PACKAGE, MEMBER = "lifelines", "lifelines/datasets/lung.csv"
SITE_COLUMN, OUTCOME = "inst", "death_1y"
YEAR_DAYS = 365
COLUMNS = ("age", "sex", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss", OUTCOME)

SCHEMA = Schema(
    (Feature("age", low=30.0, high=90.0),
     Feature("sex", kind="categorical", categories=("male", "female")),
     Feature("ph.ecog", kind="categorical", categories=("0", "1", "2", "3")),
     Feature("ph.karno", low=40.0, high=100.0),
     Feature("pat.karno", low=30.0, high=100.0),
     Feature("meal.cal", low=0.0, high=3000.0, indicator=True),
     Feature("wt.loss", low=-30.0, high=70.0, indicator=True)),
    OUTCOME, ("no", "yes"))
"""The federation's schema of this table (fills and shared scaling come from ``fedge stats``)."""

Row = dict[str, str]


def lung_csv() -> Path:
    """The CSV inside the installed lifelines distribution.

    Raises:
        ConfigError: lifelines is not installed, or its wheel has no lung.csv.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("ncctg-lung reads the CSV shipped in the lifelines package: "
                          "pip install 'fedge[datasets]'") from None
    path = Path(str(dist.locate_file(MEMBER)))
    if not path.is_file():
        raise ConfigError(f"lifelines {dist.version} ships no {MEMBER}")
    return path


def _cell(value: str) -> str:
    """``1.0`` → ``1`` (the categorical codes as text), missing stays empty."""
    return "" if value in ("", "NA") else value.removesuffix(".0")


def lung_rows() -> list[Row]:
    """The patients whose one-year outcome is known, with the site column and ``death_1y``."""
    with lung_csv().open(newline="") as f:
        records = list(csv.DictReader(f))
    rows = []
    for r in records:
        days, died = float(r["time"]), r["status"] == "1"
        if days <= YEAR_DAYS and not died:
            continue  # censored within the year: outcome unknown
        row = {c: _cell(r[c]) for c in COLUMNS[:-1]}
        row["sex"] = {"1": "male", "2": "female"}.get(row["sex"], "")
        row[OUTCOME] = "yes" if days <= YEAR_DAYS else "no"
        row[SITE_COLUMN] = _cell(r[SITE_COLUMN]) or "unknown"
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Site:
    """One site: the institutions it is made of, its training and its held-out rows."""

    name: str
    institutions: tuple[str, ...]
    train: tuple[Row, ...]
    test: tuple[Row, ...]


def deal_institutions(rows: Sequence[Row], sites: int) -> list[list[str]]:
    """Institutions, largest first (ties by code), each to the site with the fewest rows."""
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r[SITE_COLUMN]] = sizes.get(r[SITE_COLUMN], 0) + 1
    if not 1 <= sites <= len(sizes):
        raise ConfigError(f"ncctg-lung: sites must be 1 to {len(sizes)}, got {sites}")
    dealt: list[list[str]] = [[] for _ in range(sites)]
    totals = [0] * sites
    for inst in sorted(sizes, key=lambda i: (-sizes[i], i)):
        k = totals.index(min(totals))
        dealt[k].append(inst)
        totals[k] += sizes[inst]
    return dealt


def lung_sites(seed: int, *, sites: int = 4, test_fraction: float = 0.25) -> list[Site]:
    """The sites with a seeded, per-class hold-out of ``test_fraction`` of each site's rows."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"ncctg-lung: test_fraction must be in (0, 1), got {test_fraction}")
    rows = lung_rows()
    rng = np.random.default_rng(seed)
    out = []
    for k, institutions in enumerate(deal_institutions(rows, sites)):
        mine = [r for r in rows if r[SITE_COLUMN] in institutions]
        test: set[int] = set()
        for value in SCHEMA.classes:
            index = [i for i, r in enumerate(mine) if r[OUTCOME] == value]
            take = round(test_fraction * len(index))
            test.update(int(i) for i in rng.permutation(index)[:take])
        out.append(Site(f"site-{k + 1}", tuple(institutions),
                        tuple(r for i, r in enumerate(mine) if i not in test),
                        tuple(r for i, r in enumerate(mine) if i in test)))
    return out


def write_csv(path: Path, rows: Sequence[Row]) -> Path:
    """One site's rows as the site would hold them: a CSV with a header, site column too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[SITE_COLUMN, *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    return path


def shared_lung_schema(train_csvs: Sequence[Path]) -> Schema:
    """:data:`SCHEMA` with the sites' federated statistics (fills, shared mean and std, class
    counts), as ``fedge stats --out`` makes it from the devices' reports."""
    from edge_client.feature_stats import combine, shared_schema, site_summaries

    reports = [site_summaries(path, SCHEMA)[1] for path in train_csvs]
    return shared_schema(SCHEMA, combine(reports))


def load_lung_dataset(seed: int, *, sites: int = 4, test_fraction: float = 0.25) -> Dataset:
    """The sites' rows encoded onto the schema (one-hot categories, missing cells filled with
    the federation's means, indicators), raw units; groups are the sites."""
    import tempfile

    from edge_client.encode import load_schema_csv

    split = lung_sites(seed, sites=sites, test_fraction=test_fraction)
    with tempfile.TemporaryDirectory(prefix="fedge-lung-") as tmp:
        folder = Path(tmp)
        train = [write_csv(folder / f"{s.name}.csv", s.train) for s in split]
        test = [write_csv(folder / f"{s.name}-test.csv", s.test) for s in split]
        schema = shared_lung_schema(train)
        parts = [[load_schema_csv(p, schema).data for p in paths] for paths in (train, test)]
    x_train, x_test = (np.concatenate([d.x for d in part]) for part in parts)
    y_train, y_test = (np.concatenate([d.y for d in part]).astype(np.int64) for part in parts)
    groups_train, groups_test = (
        np.concatenate([np.full(len(d.y), k, np.int64) for k, d in enumerate(part)])
        for part in parts)
    info = DatasetInfo(
        name="ncctg-lung", feature_names=schema.encoded_names, classes=SCHEMA.classes,
        model="logreg", input_shape=(len(schema.encoded_names),),
        notes=f"NCCTG lung cancer trial (lifelines' bundled lung.csv); outcome death within "
        f"{YEAR_DAYS} days, patients censored before left out; {sites} sites of whole "
        "institutions (natural partition); categories one-hot, missing cells filled with the "
        "federated means plus indicators; raw units")
    return Dataset(x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test,
                   info, groups_train, groups_test)
