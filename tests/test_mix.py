"""mix: target shares by a label column, the same whatever the number of workers."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import report, require_shared_data, run_cli, stage, write_config

LLAMA3 = {"general": 0.5, "math": 0.25, "code": 0.17, "multilingual": 0.08}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """The 697 sample documents with a `domain` label in skewed proportions (general 55%, code
    25%, math 12%, multilingual 8%: a crawl's mix, not the target), as JSONL."""
    data = require_shared_data()
    out = tmp_path_factory.mktemp("mix") / "docs.jsonl"
    cycle = ["general"] * 11 + ["code"] * 5 + ["math"] * 2 + ["multilingual"] * 2
    cycle = cycle[:20]
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt") as src, open(out, "w") as f:
        for i, line in enumerate(src):
            rec = json.loads(line)
            if not rec.get("text", "").strip():
                continue
            f.write(json.dumps({"id": rec["id"], "text": rec["text"], "domain": cycle[i % 20]}))
            f.write("\n")
    return out


def _run(tmp: Path, src: Path, name: str, mix: str, workers: int, tokenize: bool = False) -> Path:
    stages = f"  - read: {{slice_mb: 0.25}}\n  - mix: {mix}\n  - shuffle: {{docs_per_part: 200}}\n"
    if tokenize:
        stages += "  - tokenize: {formats: [parquet]}\n"
    out = tmp / name
    cfg = write_config(tmp / f"{name}.yaml", [str(src)], out, stages)
    r = run_cli("run", str(cfg), "--workers", str(workers), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _copies(out: Path) -> Counter:
    table = pq.read_table(out / "documents" / "02_shuffle")
    ids = table["id"].to_pylist()
    reps = table["repeat"].to_pylist() if "repeat" in table.column_names else [0] * len(ids)
    assert len(set(zip(ids, reps, strict=True))) == len(ids)  # each copy has its own repeat
    return Counter(ids)


def test_mix_reaches_document_targets_with_repeats_same_for_1_2_4_workers(labelled, tmp_path):
    budget = 700  # more than the ~670 non-empty documents: math (~63) is repeated ~2.8 times
    weights = json.dumps(LLAMA3)
    mix = f"{{by: domain, weights: {weights}, unit: documents, budget: {budget}, max_repeats: 3}}"
    outs = [_run(tmp_path, labelled, f"w{w}", mix, w) for w in (1, 2, 4)]
    rep = report(outs[0])
    summary = rep["mix"]
    assert summary["unit"] == "documents" and summary["documents"] == stage(rep, "mix")["docs_out"]
    for group, target in LLAMA3.items():
        row = summary["groups"][group]
        assert row["target_share"] == pytest.approx(target)
        assert abs(row["achieved_share_documents"] - target) <= 0.02, (group, row)
        assert not row["capped"]
    assert abs(summary["documents"] - budget) <= len(LLAMA3)  # one document per group at most
    counts = _copies(outs[0])
    assert max(counts.values()) <= 3 and max(counts.values()) > 1
    st = stage(rep, "mix")
    assert st["counters"]["repeats"] == sum(c - 1 for c in counts.values())
    assert st["docs_in"] + st["counters"]["repeats"] == st["docs_out"] + sum(st["dropped"].values())
    assert st["dropped"].get("mix_downsampled", 0) > 0  # general is sampled down
    # the same documents and copies whatever the number of workers
    for other in outs[1:]:
        assert _copies(other) == counts
        assert report(other)["mix"]["groups"] == summary["groups"]


def test_mix_token_targets_in_report_and_manifest(labelled, tmp_path):
    mix = f"{{by: domain, weights: {json.dumps(LLAMA3)}}}"  # tokens, no budget: sample down
    out = _run(tmp_path, labelled, "tok", mix, 2, tokenize=True)
    rep = report(out)
    summary = rep["mix"]
    assert summary["unit"] == "tokens" and summary["budget"] is None
    for group, target in LLAMA3.items():
        row = summary["groups"][group]
        assert abs(row["achieved_share_tokens"] - target) <= 0.02, (group, row)
        assert row["rate"] <= 1.0 and row["documents"] <= row["available_documents"]
    # sampling down only: no document is repeated, and the scarcest group is used whole
    assert max(_copies(out).values()) == 1
    assert max(row["rate"] for row in summary["groups"].values()) == pytest.approx(1.0)
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["mix"] == summary
    # the manifest's tokens are the mix's tokens (text tokens + one EOS each)
    assert manifest["tokens"] == summary["tokens"]
    log = pq.read_table(out / "stages" / "01_mix").to_pydict()
    assert set(log["mix_group"]) == set(LLAMA3)
    assert all((c > 0) == k for c, k in zip(log["mix_copies"], log["kept"], strict=True))


def test_mix_unknown_column_fails_with_the_column_named(labelled, tmp_path):
    stages = "  - read: {}\n  - mix: {by: topic, weights: {a: 1}}\n"
    cfg = write_config(tmp_path / "c.yaml", [str(labelled)], tmp_path / "out", stages)
    r = run_cli("run", str(cfg), "--workers", "1", "--no-progress")
    assert r.returncode != 0
    assert "'topic'" in r.stderr and "mix" in r.stderr, r.stderr[-2000:]


def test_mix_weights_must_be_positive(tmp_path):
    from refine.errors import ConfigError
    from refine.pipeline.config import build_stages

    with pytest.raises((ConfigError, ValueError), match="weights"):
        build_stages([{"mix": {"by": "domain", "weights": {"a": 0.0}}}])
