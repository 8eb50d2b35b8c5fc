"""The LocalCluster refine starts: Dask's dashboard only when asked for (it imports bokeh, ~1.5
CPU-s in the driver at every start), and then its link is real."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from refine.pipeline.cluster import dashboard_link, dask_client
from refine.pipeline.config import ClusterConfig

PROBE = """
import json, sys
from refine.pipeline.cluster import dashboard_link, dask_client
from refine.pipeline.config import ClusterConfig
if __name__ == "__main__":
    cfg = ClusterConfig(workers=1)
    with dask_client(cfg) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        print(json.dumps({"link": dashboard_link(client, cfg), "bokeh": "bokeh" in sys.modules}))
"""


def test_default_local_cluster_serves_no_dashboard_and_never_imports_bokeh(tmp_path):
    script = tmp_path / "probe.py"  # a fresh process: this one may have imported bokeh already
    script.write_text(PROBE)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"link": None, "bokeh": False}


def test_dashboard_on_request_is_served_at_the_printed_link():
    cfg = ClusterConfig(workers=1, dashboard=True)
    with dask_client(cfg) as client:
        link = dashboard_link(client, cfg)
        assert link and link.startswith("http://")
        with urllib.request.urlopen(link, timeout=30) as resp:
            assert resp.status == 200
            assert b"Dask" in resp.read()


def test_remote_scheduler_link_is_passed_through():
    class FakeClient:
        dashboard_link = "http://10.0.0.5:8787/status"

    cfg = ClusterConfig(address="tcp://10.0.0.5:8786")
    assert dashboard_link(FakeClient(), cfg) == "http://10.0.0.5:8787/status"
    assert dashboard_link(FakeClient(), ClusterConfig(workers=1)) is None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "slurm",
            ["#SBATCH -p cpu", "#SBATCH -A proj", "#SBATCH --cpus-per-task=16", "#SBATCH --mem=64G",
             "#SBATCH -t 24:00:00", "#SBATCH --exclusive"],
        ),
        ("pbs", ["#PBS -q cpu", "#PBS -A proj", "ncpus=16:mem=64GB", "#PBS -l walltime=24:00:00"]),
    ],
)  # fmt: skip
def test_batch_job_scripts(kind, expected):
    """cluster.kind: slurm / pbs: the job script each job runs (dask-jobqueue's job_script()),
    with single-threaded workers, one per core, in the driver's Python after the prologue."""
    import sys

    from refine.pipeline.cluster import batch_cluster
    from refine.pipeline.config import ClusterConfig

    cfg = ClusterConfig(
        kind=kind,
        jobs=4,
        cores=16,
        memory="64GiB",
        walltime="24:00:00",
        queue="cpu",
        account="proj",
        job_extra=["--exclusive"] if kind == "slurm" else [],
        job_script_prologue=["source /opt/refine/venv/bin/activate"],
    )
    cluster = batch_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in expected:
        assert line in script, script
    assert "source /opt/refine/venv/bin/activate" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script
    assert "--nthreads 1" in script and "--nworkers 16" in script


def test_batch_cluster_config_is_checked():
    from pydantic import ValidationError

    from refine.pipeline.config import ClusterConfig

    with pytest.raises(ValidationError, match="needs cores and memory"):
        ClusterConfig(kind="slurm")
    with pytest.raises(ValidationError, match="exclude each other"):
        ClusterConfig(kind="pbs", cores=1, memory="1GiB", address="tcp://x:8786")
    with pytest.raises(ValidationError, match="needs image"):
        ClusterConfig(kind="kubernetes")
