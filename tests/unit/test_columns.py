"""Expressions built once per JVM (streaming_jobs.common.columns.per_jvm): pure logic, no Spark."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyspark import SparkContext

from streaming_jobs.common.columns import per_jvm


def test_built_once_however_many_threads_ask() -> None:
    calls = 0
    started = threading.Barrier(8)

    def build() -> object:
        nonlocal calls
        calls += 1
        return object()

    get = per_jvm(build)

    def ask(_: int) -> object:
        started.wait()
        return get()

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = set(map(id, pool.map(ask, range(8))))
    assert calls == 1
    assert len(got) == 1


def test_built_again_for_a_new_jvm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expressions of a JVM that is gone are never handed out."""
    get = per_jvm(object)
    monkeypatch.setattr(SparkContext, "_gateway", object())
    first = get()
    assert get() is first
    monkeypatch.setattr(SparkContext, "_gateway", object())
    assert get() is not first
