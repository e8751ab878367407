"""The federation-wide data schema: which columns a model reads, and how each becomes numbers.

One schema per federation, carried in the model file's metadata and kept as an editable TOML
file (``fedge schema infer`` proposes one). Every device maps its own CSV onto it by column
name (:mod:`edge_client.encode`), so column order, extra columns and local habits do not
change what the model sees: numeric columns (missing cells imputed as the schema says, with
an optional missing-indicator), categorical columns one-hot over the schema's categories.
Shared scaling statistics (``fedge stats --out``) make every site standardise identically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edge_client.errors import ConfigError
from edge_client.settings import load_toml

SCHEMA_FORMAT = "fedge-schema/1"
Kind = Literal["numeric", "categorical"]
Missing = Literal["mean", "median", "constant", "error"]
Scaling = Literal["shared", "per-site"]
SCALINGS: tuple[Scaling, ...] = ("shared", "per-site")
KINDS: tuple[Kind, ...] = ("numeric", "categorical")
MISSING: tuple[Missing, ...] = ("mean", "median", "constant", "error")
MAX_CATEGORIES = 1_000  # one-hot width per column: beyond this a column is an identifier
MAX_FEATURES = 10_000  # bounds what a schema from a file or a model can make a device allocate
HISTOGRAM_BINS = 10  # fixed bins over [low, high]: the same edges at every site


@dataclass(frozen=True)
class Feature:
    """One input column.

    Attributes:
        name: the CSV column (matched by name, not position).
        kind: ``numeric`` or ``categorical``.
        categories: a categorical column's values, in one-hot order.
        missing: how a missing numeric cell is filled: ``mean``/``median`` (``fill`` holds the
            federation's value), ``constant`` (``fill``), or ``error`` (refuse the file).
        fill: the value a missing numeric cell gets.
        indicator: add a 0/1 ``NAME_missing`` feature that says a cell was missing.
        low, high: the range of the fixed histogram bins of federated statistics.
        mean, std: shared scaling (from federated statistics); None: not shared.
    """

    name: str
    kind: Kind = "numeric"
    categories: tuple[str, ...] = ()
    missing: Missing = "mean"
    fill: float = 0.0
    indicator: bool = False
    low: float = 0.0
    high: float = 1.0
    mean: float | None = None
    std: float | None = None

    def encoded_names(self) -> tuple[str, ...]:
        """The model inputs this column becomes, in order."""
        if self.kind == "categorical":
            return tuple(f"{self.name}={c}" for c in self.categories)
        return (self.name, f"{self.name}_missing") if self.indicator else (self.name,)


@dataclass(frozen=True)
class Schema:
    """The federation's inputs and label.

    Attributes:
        features: the input columns, in model order.
        label: the label column.
        classes: the label values in class-index order; empty for a regression target.
        left_out: columns a proposal left out, with why (informative only).
        class_counts: the federation's rows per class (``fedge stats --out``), for balanced
            class weights (``fedge export --class-weights balanced``); empty: not known.
        scaling: ``shared`` asks for the aggregator's statistics phase (it combines the
            devices' reports and publishes the model with the shared statistics before
            round 1); ``per-site``: each site standardises with its own unless the schema
            already has shared statistics.
    """

    features: tuple[Feature, ...]
    label: str
    classes: tuple[str, ...] = ()
    left_out: Mapping[str, str] = field(default_factory=dict)
    class_counts: tuple[int, ...] = ()
    scaling: Scaling = "per-site"

    def __post_init__(self) -> None:
        _check(self)

    @property
    def encoded_names(self) -> tuple[str, ...]:
        """The model's input features, in order: the width of the model's input."""
        return tuple(n for f in self.features for n in f.encoded_names())

    @property
    def shared_scaling(self) -> bool:
        """Every numeric feature has federation-wide ``mean`` and ``std``."""
        numeric = [f for f in self.features if f.kind == "numeric"]
        return bool(numeric) and all(f.mean is not None and f.std is not None for f in numeric)

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and TOML-ready dict (what model metadata carries)."""
        out: dict[str, Any] = {"format": SCHEMA_FORMAT, "label": {"column": self.label,
                                                                 "classes": list(self.classes)}}
        if self.class_counts:
            out["label"]["counts"] = list(self.class_counts)
        if self.scaling != "per-site":
            out["scaling"] = self.scaling
        out["feature"] = [_feature_dict(f) for f in self.features]
        if self.left_out:
            out["left_out"] = dict(self.left_out)
        return out

    def to_json(self) -> str:
        """Compact JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def with_features(self, features: Sequence[Feature]) -> Schema:
        """The same schema with ``features`` replaced (e.g. shared statistics filled in)."""
        return replace(self, features=tuple(features))


def _feature_dict(f: Feature) -> dict[str, Any]:
    if f.kind == "categorical":
        return {"name": f.name, "kind": f.kind, "categories": list(f.categories)}
    out: dict[str, Any] = {"name": f.name, "kind": f.kind, "missing": f.missing,
                           "fill": f.fill, "indicator": f.indicator, "low": f.low,
                           "high": f.high}
    if f.mean is not None and f.std is not None:
        out.update(mean=f.mean, std=f.std)
    return out


def _check(schema: Schema) -> None:
    where = "schema"
    if not schema.features or len(schema.features) > MAX_FEATURES:
        raise ConfigError(f"{where}: needs 1 to {MAX_FEATURES} features")
    names = [f.name for f in schema.features]
    if len(set(names)) != len(names) or schema.label in names:
        raise ConfigError(f"{where}: feature names must be distinct and differ from the label")
    if len(set(schema.classes)) != len(schema.classes):
        raise ConfigError(f"{where}: label classes must be distinct")
    if schema.scaling not in SCALINGS:
        raise ConfigError(f"{where}: scaling must be one of {SCALINGS}")
    if schema.class_counts and (len(schema.class_counts) != len(schema.classes)
                                or min(schema.class_counts) < 0):
        raise ConfigError(f"{where}: label counts must be one count >= 0 per class")
    for f in schema.features:
        at = f'{where}: feature "{f.name}"'
        if not f.name or f.kind not in KINDS or f.missing not in MISSING:
            raise ConfigError(f"{at}: kind must be one of {KINDS} and missing one of {MISSING}")
        if f.kind == "categorical" and not 1 <= len(f.categories) <= MAX_CATEGORIES:
            raise ConfigError(f"{at}: needs 1 to {MAX_CATEGORIES} categories")
        if len(set(f.categories)) != len(f.categories):
            raise ConfigError(f"{at}: categories must be distinct")
        numbers = [f.fill, f.low, f.high] + [v for v in (f.mean, f.std) if v is not None]
        if not all(math.isfinite(v) for v in numbers) or not f.low < f.high:
            raise ConfigError(f"{at}: fill, low < high, mean and std must be finite numbers")
        if f.std is not None and f.std <= 0:
            raise ConfigError(f"{at}: std must be > 0")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    return float(value)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return tuple(value)


_FEATURE_KEYS = {"name", "kind", "categories", "missing", "fill", "indicator", "low", "high",
                 "mean", "std"}


def _feature(obj: Any, where: str) -> Feature:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ConfigError(f"{where}: each [[feature]] needs a name")
    at = f'{where}: feature "{obj["name"]}"'
    unknown = sorted(set(obj) - _FEATURE_KEYS)
    if unknown:
        raise ConfigError(f"{at}: unknown keys {unknown}")
    numbers = {k: _number(obj[k], f"{at}: {k}") for k in ("fill", "low", "high", "mean", "std")
               if k in obj}
    indicator = obj.get("indicator", False)
    if not isinstance(indicator, bool):
        raise ConfigError(f"{at}: indicator must be true or false")
    return Feature(name=obj["name"], kind=obj.get("kind", "numeric"),
                   categories=_strings(obj.get("categories", []), f"{at}: categories"),
                   missing=obj.get("missing", "mean"), indicator=indicator, **numbers)


def schema_from_dict(obj: Any, where: str = "schema") -> Schema:
    """Parse :meth:`Schema.to_dict` output (from TOML or model metadata) strictly.

    Raises:
        ConfigError: a wrong format tag, a missing or unknown key, or a bad value; the
            message names ``where`` and the feature.
    """
    if not isinstance(obj, dict) or obj.get("format") != SCHEMA_FORMAT:
        raise ConfigError(f'{where}: not a schema (needs format = "{SCHEMA_FORMAT}")')
    label = obj.get("label")
    if not isinstance(label, dict) or not isinstance(label.get("column"), str):
        raise ConfigError(f"{where}: needs [label] with column = NAME")
    features = obj.get("feature")
    if not isinstance(features, list):
        raise ConfigError(f"{where}: needs [[feature]] tables")
    left_out = obj.get("left_out", {})
    if not isinstance(left_out, dict):
        raise ConfigError(f"{where}: left_out must be a table")
    counts = label.get("counts", [])
    if not isinstance(counts, list) or not all(type(c) is int for c in counts):
        raise ConfigError(f"{where}: label counts must be a list of integers")
    try:
        return Schema(tuple(_feature(f, where) for f in features), label["column"],
                      _strings(label.get("classes", []), f"{where}: label classes"),
                      {str(k): str(v) for k, v in left_out.items()}, tuple(counts),
                      obj.get("scaling", "per-site"))
    except ConfigError as e:
        raise ConfigError(str(e).replace("schema:", f"{where}:", 1)) from None


def load_schema(path: Path) -> Schema:
    """Read a schema TOML file (as ``fedge schema infer`` writes it).

    Raises:
        ConfigError: unreadable file, invalid TOML or an invalid schema, named by path.
    """
    return schema_from_dict(load_toml(path, "schema"), str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a TOML basic string: JSON's escapes are valid TOML


def schema_toml(schema: Schema) -> str:
    """The schema as an editable TOML document, with comments on what to edit."""
    d = schema.to_dict()
    lines = [f'format = "{SCHEMA_FORMAT}"',
             "# scaling: shared = the aggregator combines the devices' statistics before round 1",
             f"scaling = {_toml_value(schema.scaling)}", "",
             "# classes: label values in class order (empty: a regression target)",
             "[label]", f"column = {_toml_value(schema.label)}",
             f"classes = {_toml_value(list(schema.classes))}"]
    if schema.class_counts:
        lines += ["# counts: the federation's rows per class (for --class-weights balanced)",
                  f"counts = {_toml_value(list(schema.class_counts))}"]
    lines.append("")
    if schema.left_out:
        lines += ["# columns left out of the model, and why (delete a line or add a feature)",
                  "[left_out]"]
        lines += [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in schema.left_out.items()]
        lines.append("")
    lines += ["# kind: numeric | categorical. missing (numeric): mean | median | constant | "
              "error;", "# fill: the value a missing cell gets; indicator: add a NAME_missing "
              "input; low/high: histogram range", ""]
    for feature in d["feature"]:
        lines.append("[[feature]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in feature.items()]
        lines.append("")
    return "\n".join(lines)
