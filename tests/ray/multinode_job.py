"""Run a small job on a two-node Ray cluster on this machine; print where things ran (JSON).

Started as a separate process by ``test_multinode.py``: the head and the second
node are separate raylet processes (``ray.cluster_utils.Cluster``), stopped by
their handles at the end.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from actors.driver import RayDriver  # noqa: E402
from actors.options import ArmWorkerOptions  # noqa: E402
from hz_ray.sim import SimulatedFactory  # noqa: E402
from tests.support import world_config  # noqa: E402


def main() -> int:
    # Each node offers 2 "arm_slot"s and each worker takes one, so 4 workers need both nodes
    # (on top of the workers' SPREAD scheduling strategy, which is best effort).
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False,
                                      "resources": {"arm_slot": 2}})
    driver = None
    try:
        cluster.add_node(num_cpus=1, resources={"arm_slot": 2})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        config = world_config("multinode", slots=4, max_hours=3)
        driver = RayDriver(config, SimulatedFactory("smooth", seed=4),
                           Path(tempfile.mkdtemp(prefix="hz-ray-mn-")), seconds_per_hour=0.5,
                           worker_options=ArmWorkerOptions(resources={"arm_slot": 1}))
        driver.start()
        posterior_node = ray.get(driver.posterior.node_id.remote())
        run = driver.run(8)
        out = {
            "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
            "head": cluster.head_node.node_id,
            "posterior_node": posterior_node,
            "worker_nodes": [w.node_id for w in run.workers],
            "records": run.status.num_records,
            "arms": len(run.result.arms),
            "torch_in_workers": [w.torch_imported for w in run.workers],
        }
        print("RESULT " + json.dumps(out), flush=True)
        return 0
    finally:
        if driver is not None:
            driver.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
