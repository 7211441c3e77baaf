"""Bad configurations every entry point must refuse: exit 78, one line naming file and key."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

BAD_CONFIGS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "unknown key": (
        "pipeline.yaml",
        lambda d: d["services"].update(kafka_prot=1),
        "pipeline.yaml: services.kafka_prot: unknown key",
    ),
    "invalid symbol": (
        "symbols.yaml",
        lambda d: d["symbols"].append({"name": "btc/usdt", "tier": 1}),
        "is not a Binance spot symbol",
    ),
    "wrong type": (
        "pipeline.yaml",
        lambda d: d["streaming"]["bronze"].update(ui_port="forty"),
        "streaming.bronze.ui_port",
    ),
}


def bad_conf(
    conf_src: Path, root: Path, case: str, environ: Mapping[str, str]
) -> tuple[dict[str, str], str]:
    """A copy of `conf_src` under `root` broken as `case`: (environment, expected message)."""
    conf = root / "conf"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(conf_src, conf)
    name, change, message = BAD_CONFIGS[case]
    data = yaml.safe_load((conf / name).read_text())
    change(data)
    (conf / name).write_text(yaml.safe_dump(data))
    env = {**environ, "LAKE_CONF_DIR": str(conf), "STATE_DIR": str(root / "state")}
    return env, message
