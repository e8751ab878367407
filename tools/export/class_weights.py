"""``fedge export --class-weights``: the training loss's weight per class, from class counts.

Balanced weights are scikit-learn's ``compute_class_weight("balanced")``: ``N / (K * N[c])``
for N rows in K classes, so every class adds the same total weight and the weights average 1
over the rows (the loss keeps its scale). The counts are the federation's: ``--class-counts``
or the schema's label counts (``fedge stats --schema S --out shared.toml`` writes them).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_client.schema import Schema


class ClassWeightError(ValueError):
    """The class weights cannot be made; the message names the flag to fix."""


def balanced_weights(counts: Sequence[int]) -> tuple[float, ...]:
    """``N / (K * N[c])`` per class.

    Raises:
        ClassWeightError: fewer than 2 classes, or a class without rows (its weight would be
            infinite).
    """
    if len(counts) < 2:
        raise ClassWeightError(f"balanced class weights need counts of 2 or more classes, "
                               f"got {list(counts)}")
    if min(counts) <= 0:
        raise ClassWeightError(f"class counts {list(counts)}: every class needs at least one "
                               "row for balanced weights")
    total = sum(counts)
    return tuple(total / (len(counts) * c) for c in counts)


def class_weights(mode: str | None, counts: Sequence[int] | None, schema: Schema | None,
                  classes: int) -> tuple[float, ...] | None:
    """The weights ``--class-weights MODE`` asks for (None: unweighted).

    Raises:
        ClassWeightError: ``--class-counts`` without ``balanced``, no counts to balance by, or
            counts that do not fit ``--classes``.
    """
    if mode != "balanced":
        if counts is not None:
            raise ClassWeightError("--class-counts sets balanced class weights: add "
                                   "--class-weights balanced")
        return None
    if classes < 2:
        raise ClassWeightError("--class-weights balanced needs a classification model "
                               "(--classes 2 or more)")
    if counts is None and schema is not None and schema.class_counts:
        counts = schema.class_counts
    if counts is None:
        raise ClassWeightError("--class-weights balanced needs the class frequencies: give "
                               "--class-counts N0,N1,... or a --schema with the federation's "
                               "label counts (fedge stats --schema S --out shared.toml)")
    if len(counts) != classes:
        raise ClassWeightError(f"--class-counts: {len(counts)} counts for {classes} classes")
    return balanced_weights(counts)
