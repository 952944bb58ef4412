"""Strimzi `KafkaTopic` resources for deploy/k8s/base/topics.yaml, from strainwatch.topics.

    python -m tests.unit.deploy.k8s_topics          # rewrite deploy/k8s/base/topics.yaml

tests/unit/deploy/test_k8s.py fails when the committed file differs from this output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from strainwatch.topics import ALL_TOPICS, INTERNAL_TOPICS, PRIVACY_TOPICS, TopicSpec, partitions_for

REPO = Path(__file__).resolve().parents[3]
TOPICS_YAML = REPO / "deploy" / "k8s" / "base" / "topics.yaml"

# the Strimzi Kafka cluster the topic operator manages these topics in (its `Kafka` resource name)
CLUSTER = "strainwatch"
# partitions of every per-worker topic: STRAINWATCH_POSTURE_PARTITIONS in base/strainwatch.env
POSTURE_PARTITIONS = 12
# a three-broker cluster; an overlay for a smaller one patches spec.replicas
REPLICAS = 3
API_VERSION = "kafka.strimzi.io/v1"

HEADER = """\
# strainwatch's Kafka topics as Strimzi KafkaTopic resources, GENERATED from
# services/strainwatch/topics.py (python -m tests.unit.deploy.k8s_topics); do not edit by hand.
# Partitions: every per-worker topic has STRAINWATCH_POSTURE_PARTITIONS (base/strainwatch.env), the
# upper bound on processor replicas; retention, cleanup policy and max.message.bytes are topics.py's.
# The alerting service's internal state topics are listed too, so that the operator owns their
# settings; faust's changelog topics are created by the processor itself.
"""


def resource_name(topic: str) -> str:
    """Kubernetes names allow lowercase letters, digits, '-' and '.': topic names fit as they are."""
    return topic


def kafka_topic(spec: TopicSpec, posture_partitions: int = POSTURE_PARTITIONS) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in spec.config().items():
        config[key] = int(value) if value.lstrip("-").isdigit() else value
    return {
        "apiVersion": API_VERSION,
        "kind": "KafkaTopic",
        "metadata": {
            "name": resource_name(spec.name),
            "labels": {"strimzi.io/cluster": CLUSTER},
            "annotations": {"strainwatch/description": spec.description},
        },
        "spec": {
            "topicName": spec.name,
            "partitions": partitions_for(spec, posture_partitions),
            "replicas": REPLICAS,
            "config": config,
        },
    }


def render(posture_partitions: int = POSTURE_PARTITIONS) -> str:
    docs = [
        kafka_topic(spec, posture_partitions) for spec in (*ALL_TOPICS, *INTERNAL_TOPICS, *PRIVACY_TOPICS)
    ]
    return HEADER + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True, width=100)


if __name__ == "__main__":
    TOPICS_YAML.write_text(render())
    print(f"wrote {TOPICS_YAML.relative_to(REPO)}")
