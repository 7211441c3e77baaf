"""Column expressions shared by the layers: pure Column -> Column helpers."""

from __future__ import annotations

from pyspark.sql import Column


def any_of(conditions: list[Column]) -> Column:
    """The OR of `conditions` as a balanced tree.

    A chain `a | b | c ...` nests one level per condition: a batch touching
    the whole market's 2,000 symbols overflowed the JVM's stack while
    Spark analysed it (make bench's 2,000-symbol run); the tree is
    log2(n) deep.
    """
    if not conditions:
        raise ValueError("any_of needs at least one condition")
    level = list(conditions)
    while len(level) > 1:
        pairs = [a | b for a, b in zip(level[::2], level[1::2], strict=False)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0]
