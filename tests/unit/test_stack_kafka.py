"""The dev stack's broker: cluster ids that Kafka's storage tool accepts."""

from __future__ import annotations

import base64

import pytest

from remed_stack.kafka import new_cluster_id

pytestmark = pytest.mark.unit


def test_cluster_ids_never_start_with_a_dash() -> None:
    # 1 in 64 plain draws starts with "-", which kafka-storage read as an option and refused
    # ("argument --cluster-id/-t: expected one argument"); 5000 draws meet ~78 such cases.
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)


def test_cluster_id_is_16_bytes_of_url_safe_base64() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
