"""A schema shown as text: one line per column, what it becomes and how gaps are filled."""

from __future__ import annotations

from edge_client.schema import Feature, Schema


def _how(f: Feature) -> str:
    if f.kind == "categorical":
        shown = ", ".join(f.categories[:8]) + (", ..." if len(f.categories) > 8 else "")
        return f"one-hot over {len(f.categories)}: {shown}"
    missing = ("refused" if f.missing == "error"
               else f"{f.missing} fill {f.fill:.6g}" + (" + indicator" if f.indicator else ""))
    scaling = ("" if f.mean is None or f.std is None
               else f"; shared scaling mean {f.mean:.6g} std {f.std:.6g}")
    return f"missing: {missing}; range [{f.low:.6g}, {f.high:.6g}]{scaling}"


def render_schema(schema: Schema) -> str:
    """The schema as a few lines of text (``fedge schema show``, ``fedge export``)."""
    label = (f"classes {', '.join(schema.classes)}" if schema.classes
             else "regression target")
    width = max(len(f.name) for f in schema.features)
    scaling = ("shared (federated statistics)" if schema.shared_scaling
               else "shared (the aggregator collects the statistics before round 1)"
               if schema.scaling == "shared" else "per site")
    lines = [f"schema: {len(schema.features)} columns -> {len(schema.encoded_names)} model "
             f"inputs; label {schema.label!r} ({label}); scaling {scaling}"]
    if schema.class_counts:
        lines.append("  class counts: " + ", ".join(
            f"{c} {n}" for c, n in zip(schema.classes, schema.class_counts, strict=True)))
    lines += [f"  {f.name:<{width}}  {f.kind:<11}  {len(f.encoded_names())} input(s); {_how(f)}"
              for f in schema.features]
    lines += [f"  left out: {name} ({why})" for name, why in schema.left_out.items()]
    return "\n".join(lines)
