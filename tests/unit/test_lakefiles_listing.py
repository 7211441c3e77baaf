"""A lake on local disk is listed while its writers work: what vanishes meanwhile is left out.

`make soak` crashed 24 minutes in when a commit removed its markers folder
(.hoodie/.temp/<instant>) while the listing walked it; `make status` and the
`lakehouse` CLI list a running lake the same way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming_jobs.common import lakefiles
from streaming_jobs.common.settings import PROJECT_ROOT, load_settings

INSTANT = "20261207033855951"


def lake(tmp_path: Path) -> Path:
    tables = tmp_path / "lake" / "tables"
    for name in ("bronze_trades", "silver_ohlcv"):
        table = tables / name
        (table / ".hoodie" / ".temp" / INSTANT).mkdir(parents=True)
        (table / ".hoodie" / ".temp" / INSTANT / "f.parquet.marker.CREATE").write_text("m")
        (table / ".hoodie" / "hoodie.properties").write_text("hoodie.table.name=" + name)
        (table / "date=2024-08-09").mkdir()
        (table / "date=2024-08-09" / "f.parquet").write_bytes(b"PAR1")
    # A creation under way (common/hudi.clear_cut_short_creation): not yet a table.
    (tables / "gold_risk" / ".hoodie").mkdir(parents=True)
    return tables


def test_a_lake_listed_while_a_commit_removes_its_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = lake(tmp_path)
    walk = os.walk

    def walk_while_committing(top: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for folder, subfolders, names in walk(top, *args, **kwargs):
            if "f.parquet.marker.CREATE" in names:
                Path(folder, "f.parquet.marker.CREATE").unlink()  # listed, then removed
            yield folder, subfolders, names
            if folder.endswith(".temp"):
                shutil.rmtree(Path(folder, INSTANT))  # listed as a folder, gone before entered

    monkeypatch.setattr(lakefiles.os, "walk", walk_while_committing)
    settings = load_settings(PROJECT_ROOT / "conf", {"STATE_DIR": str(tmp_path)})
    sizes = lakefiles.Store(settings).sizes(f"file://{tables}")
    assert sizes == {
        "bronze_trades/.hoodie/hoodie.properties": len("hoodie.table.name=bronze_trades"),
        "bronze_trades/date=2024-08-09/f.parquet": 4,
        "silver_ohlcv/.hoodie/hoodie.properties": len("hoodie.table.name=silver_ohlcv"),
        "silver_ohlcv/date=2024-08-09/f.parquet": 4,
    }


def test_the_tables_are_the_folders_with_hoodie_properties(tmp_path: Path) -> None:
    lake(tmp_path)
    settings = load_settings(PROJECT_ROOT / "conf", {"STATE_DIR": str(tmp_path)})
    assert lakefiles.tables(settings) == ["bronze_trades", "silver_ohlcv"]
    empty = load_settings(PROJECT_ROOT / "conf", {"STATE_DIR": str(tmp_path / "none")})
    assert lakefiles.tables(empty) == []


def test_a_clustering_plan_is_not_a_write_in_flight(tmp_path: Path) -> None:
    """Names as Hudi 1.1.1 wrote them (a table clustered every 3 commits, the plan
    run apart): a write begun is in flight; a clustering planned or half run is
    not (it brings no rows, and a stopped layer may leave one for its next driver),
    while its completed replacecommit is a completed instant."""
    settings = load_settings(PROJECT_ROOT / "conf", {"STATE_DIR": str(tmp_path)})
    timeline = Path(settings.table_path("bronze_trades").removeprefix("file://"), ".hoodie")
    (timeline / "timeline").mkdir(parents=True)
    for name in (
        "20261207133607749.commit.requested",
        "20261207133607749.inflight",
        "20261207133607749_20261207133613428.commit",
        "20261207133616972.clustering.requested",
        "20261207133616972.clustering.inflight",
        "20261207133616972_20261207133622253.replacecommit",
        "20261207133617630.clustering.requested",  # planned, not yet run
        "20261207133618001.clustering.requested",  # run by a driver killed midway
        "20261207133618001.clustering.inflight",
        "20261207133618887.commit.requested",  # a write in flight
        "20261207133618887.inflight",
    ):
        (timeline / "timeline" / name).write_text("")
    listed = lakefiles.timeline(settings, "bronze_trades")
    assert listed.pending == {"20261207133618887"}
    assert sorted(listed.completed) == ["20261207133607749", "20261207133616972"]
