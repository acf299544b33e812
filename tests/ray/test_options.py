"""Actor options are validated once and translated to Ray options in one place."""

from __future__ import annotations

import pytest

from actors.options import (
    HEAD_NODE_RESOURCE,
    ArmWorkerOptions,
    PosteriorActorOptions,
    job_namespace,
)
from hz_ray.errors import ConfigError, InputDataError
from hz_ray.records import arm_id_for, parse_arm_id


def test_posterior_options_make_a_restartable_threaded_actor_on_the_head_node():
    opts = PosteriorActorOptions().ray_options()
    assert opts["max_restarts"] == -1 and opts["max_task_retries"] > 0
    assert set(opts["concurrency_groups"]) == {"ingest", "sample", "control"}
    assert opts["resources"] == {HEAD_NODE_RESOURCE: 0.001}
    assert "resources" not in PosteriorActorOptions(pin_to_head=False).ray_options()


def test_worker_options_need_no_cpu_and_spread():
    opts = ArmWorkerOptions().ray_options()
    assert opts["num_cpus"] == 0 and opts["scheduling_strategy"] == "SPREAD"
    assert opts["max_restarts"] == -1 and opts["max_task_retries"] == -1
    with pytest.raises(ConfigError, match="scheduling_strategy"):
        ArmWorkerOptions(scheduling_strategy="PACK")
    with pytest.raises(ConfigError, match="ingest_concurrency"):
        PosteriorActorOptions(ingest_concurrency=0)


def test_arm_ids_and_namespaces():
    assert arm_id_for("feed-vm-7f3a", 3, 12) == "feed-vm-7f3a.s03-0012"
    assert parse_arm_id("feed-vm-7f3a.s03-0012") == ("feed-vm-7f3a", 3, 12)
    assert parse_arm_id("s03-0012") is None and parse_arm_id("arm-0001") is None
    assert job_namespace("feed-vm-7f3a") == "hz-ray-feed-vm-7f3a"
    with pytest.raises(InputDataError):
        arm_id_for("feed-vm", -1, 0)
    with pytest.raises(InputDataError, match="job_id"):
        arm_id_for("feed vm/1", 0, 0)
