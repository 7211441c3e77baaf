"""Column expressions shared by the layers: pure Column -> Column helpers, and
expressions built once per JVM instead of once per batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pyspark import SparkContext
from pyspark.sql import Column, DataFrame, functions as F

T = TypeVar("T")


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


def is_in(column: str, values: Iterable[str]) -> Column:
    """`column IN (values)` for text values, built in one call to the JVM.

    Column.isin makes a Py4J call per value: gold's first batch at the whole
    market's 2,000 symbols spent 5 s on 4,000 such calls. The same In
    predicate (which file and partition pruning use), parsed from one
    expression, is one call.
    """
    literals = ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return F.expr(f"`{column}` IN ({literals})") if literals else F.lit(False)


# What once() built, for the JVM whose gateway has this id.
_built: dict[int, dict[Hashable, Any]] = {}
_lock = threading.Lock()


def batch_clock() -> Column:
    """current_timestamp(): the time the batch's query was planned, one value for
    all its rows, kept out of the Java code Spark generates for the batch.

    Spark turns current_timestamp() into a literal of the batch's time and writes
    it into the code it generates, so every batch compiled its projection again
    (Janino, then the JIT's compilers on the new class): bronze's trade lane
    compiled one class per batch, about 40 a minute during `make demo` (the
    CodeGenerator logger at debug). An array literal reaches generated code as
    a reference instead, and the identity transform keeps the optimizer from
    folding it back into an inlined value: one class serves every batch.
    """
    return F.expr("element_at(transform(array(current_timestamp()), t -> t), 1)")


def once(key: Hashable, build: Callable[[], T]) -> T:
    """`build()` the first time `key` is asked for, kept for the life of the JVM.

    A Column is a JVM expression that any DataFrame can take, so expressions
    a batch needs every time are built once, not per batch: building a
    bronze parser's costs hundreds of calls from Python into the JVM, which
    on two busy cores made a quarter of a small batch (make bench-cpu's
    profile). Thread-safe: a driver's queries share what is built; what a
    JVM that is gone built is never handed out.
    """
    jvm = id(SparkContext._gateway)
    with _lock:
        if jvm not in _built:
            _built.clear()
            _built[jvm] = {}
        built = _built[jvm]
        if key not in built:
            built[key] = build()
        return cast(T, built[key])


def per_jvm(build: Callable[[], T]) -> Callable[[], T]:
    """`build`, as once() keeps it."""
    return lambda: once(build, build)


@dataclass(frozen=True)
class Projection:
    """Columns added to a frame's, then columns computed from them (replacing any of
    the same name), then `drop`: two or three DataFrames whatever the number of columns
    (each one a batch builds is analysed again on the driver)."""

    columns: list[Column]
    derived: dict[str, Column]
    drop: tuple[str, ...] = field(default=())

    def __call__(self, df: DataFrame) -> DataFrame:
        out = df.select("*", *self.columns).withColumns(self.derived)
        return out.drop(*self.drop) if self.drop else out


def built_once(build: Callable[[], Projection]) -> Callable[[DataFrame], DataFrame]:
    """The transform of `build`'s projection, its expressions built once per JVM."""
    projection = per_jvm(build)

    def transform(df: DataFrame) -> DataFrame:
        return projection()(df)

    transform.__name__ = transform.__qualname__ = build.__name__
    transform.__doc__ = build.__doc__
    return transform
