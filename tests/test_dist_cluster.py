"""The distributed engine on several Ray nodes: a head and two worker nodes started on this
machine with Ray's own test cluster (``ray.cluster_utils.Cluster``)."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'stalesgd[ray]')")

from ray.cluster_utils import Cluster  # noqa: E402
from stalesgd.real.ps.engine import RayRun  # noqa: E402

from stalesgd.experiment import expand, experiment_from_flags  # noqa: E402

#: the tests that start Ray instances run one after another in one test process when the
#: suite runs in several (pytest-xdist's --dist loadgroup): one test instance at a time
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def three_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.parametrize("algorithm", ["lock", pytest.param("hogwild", marks=pytest.mark.slow)])
def test_workers_spread_over_the_nodes_and_the_record_is_complete(three_nodes, algorithm):
    exp = experiment_from_flags("ray", problem="logreg-synthetic", algorithm=algorithm,
                                workers=4, updates=200)
    rec = RayRun(expand(exp)[0], progress=False).run()
    s = rec.summary
    nodes = {n.split("/")[1] for n in s["worker_nodes"].split(",")}
    assert len(nodes) >= 2, s["worker_nodes"]
    assert s["cluster"] == "attached" and s["stop_reason"] == "updates"
    k = np.sort(np.asarray(rec.updates["k"]))
    np.testing.assert_array_equal(k, np.arange(200))
    offsets = [float(x) for x in s["clock_offsets"].split(",")]
    assert len(offsets) == 4 and all(abs(o) < 0.5 for o in offsets)
