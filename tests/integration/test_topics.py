"""Topics follow conf/pipeline.yaml: created once, grown, never silently shrunk."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import yaml
from kafka.admin import ConfigResource, ConfigResourceType

from producer.topics import admin_client, ensure_topics, existing_partitions
from streaming_jobs.common.settings import Settings, load_settings


def settings_with_quarantine(conf: Path, topic: str, partitions: int) -> Settings:
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    pipeline["kafka"]["topics"]["quarantine"] = {
        "name": topic,
        "partitions": partitions,
        "retention_hours": 2,
    }
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    return load_settings(conf)


def test_ensure_is_idempotent_and_reconciles(services: Settings, tmp_path: Path) -> None:
    assert ensure_topics(services) == []  # the fixture's start already created them
    admin = admin_client(services)
    try:
        partitions = existing_partitions(admin)
        for spec in services.pipeline.kafka.topics.values():
            assert partitions[spec.name] == spec.partitions

        conf = tmp_path / "conf"
        shutil.copytree(os.environ["LAKE_CONF_DIR"], conf)
        topic = f"proof.topics.{uuid.uuid4().hex[:8]}"
        created = ensure_topics(settings_with_quarantine(conf, topic, 1))
        assert [(c.topic, c.action) for c in created] == [(topic, "created (1 partitions)")]
        grown = ensure_topics(settings_with_quarantine(conf, topic, 2))
        assert [(c.topic, c.action) for c in grown] == [(topic, "partitions 1 -> 2")]
        (shrink,) = ensure_topics(settings_with_quarantine(conf, topic, 1))
        assert "Kafka cannot shrink a topic" in shrink.action
        assert existing_partitions(admin)[topic] == 2

        config = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert config["topic"][topic]["retention.ms"]["value"] == str(2 * 3600 * 1000)
    finally:
        admin.close()
