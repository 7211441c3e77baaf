"""The producer's Kafka topics: created from `conf/pipeline.yaml`, checked for health.

The producer owns the topic policy (one topic per stream type, partition
count, retention), so this module turns the `kafka.topics` settings into real
topics. `ensure` is idempotent: a missing topic is created, a topic with fewer
partitions than configured is grown (Kafka cannot shrink one; fewer in the
config is reported, not hidden), and retention is set to the configured value.

    python -m producer.topics ensure   # create / reconcile (infra/kafka.sh, make up)
    python -m producer.topics ping     # exit 0 when the broker answers metadata
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from kafka.admin import (
    ConfigResource,
    ConfigResourceType,
    KafkaAdminClient,
    NewPartitions,
    NewTopic,
)
from kafka.errors import KafkaError

from streaming_jobs.common.settings import Settings, TopicSettings, load_settings


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: str


def _retention_ms(spec: TopicSettings) -> str:
    return str(spec.retention_hours * 3600 * 1000)


def admin_client(settings: Settings, timeout_ms: int = 10_000) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="lakehouse-admin",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )


def existing_partitions(admin: KafkaAdminClient) -> dict[str, int]:
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}


def ensure_topics(settings: Settings) -> list[TopicChange]:
    """Make the broker's topics match the config; returns what changed."""
    wanted = {spec.name: spec for spec in settings.pipeline.kafka.topics.values()}
    changes: list[TopicChange] = []
    admin = admin_client(settings)
    try:
        current = existing_partitions(admin)
        missing = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                topic_configs={"retention.ms": _retention_ms(spec)},
            )
            for name, spec in wanted.items()
            if name not in current
        ]
        if missing:
            admin.create_topics(missing, wait_for_metadata=True)
            changes += [
                TopicChange(t.name, f"created ({t.num_partitions} partitions)") for t in missing
            ]
        grow = {
            name: NewPartitions(total_count=spec.partitions)
            for name, spec in wanted.items()
            if name in current and current[name] < spec.partitions
        }
        if grow:
            admin.create_partitions(grow)
            changes += [
                TopicChange(name, f"partitions {current[name]} -> {p.total_count}")
                for name, p in grow.items()
            ]
        changes += [
            TopicChange(
                name,
                f"has {current[name]} partitions, config says {spec.partitions}; "
                "Kafka cannot shrink a topic",
            )
            for name, spec in wanted.items()
            if name in current and current[name] > spec.partitions
        ]
        retention = [
            ConfigResource(
                ConfigResourceType.TOPIC, name, configs={"retention.ms": _retention_ms(spec)}
            )
            for name, spec in wanted.items()
            if name in current
        ]
        if retention:
            admin.alter_configs(retention)
    finally:
        admin.close()
    return changes


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    settings = load_settings()
    try:
        if command == "ping":
            admin = admin_client(settings, timeout_ms=3_000)
            try:
                admin.describe_cluster()
            finally:
                admin.close()
            return 0
        if command == "ensure":
            for change in ensure_topics(settings):
                print(f"topic {change.topic}: {change.action}")
            return 0
    except KafkaError as err:
        print(f"kafka at {settings.kafka_bootstrap_servers}: {err!r}", file=sys.stderr)
        return 1
    print("usage: python -m producer.topics ensure|ping", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
