"""Every filter of configs/sample.yaml, chained as the runner fuses them, on documents that
break naive code: each gets a decision with a reason, none raises."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from support import REPO

from refine.pipeline.config import build_stages, expand_env_params
from refine.pipeline.runner import PartJob, run_part
from refine.pipeline.stage import Partition

EDGE_CASES = {
    "empty": "",
    "whitespace": " \n\t \n",
    "long_line": "word " * 2_000_000,  # 10 MB on one line
    "chinese": "这是一个没有空格的中文句子，用来测试分词器是否能正确处理。" * 50,
    "japanese": "これはスペースのない日本語の文章です。形態素解析が必要になります。" * 50,
    "arabic": "هذا نص باللغة العربية يكتب من اليمين إلى اليسار. " * 60,
    "hebrew": "זהו טקסט בעברית שנכתב מימין לשמאל. " * 60,
    "mixed": "English words, русские слова, 中文字符 and emoji 🎉 mixed together. " * 40,
    "control": "line with \x00 nul and \x1b escape and \ufffd replacement chars.\n" * 30,
    "english": (
        "The committee met on Tuesday to discuss the budget for the coming year. "
        "Members agreed that the library needs new books and longer opening hours.\n"
    )
    * 20,
}


def test_every_sample_filter_decides_on_edge_cases(tmp_path, sample_models, monkeypatch):
    monkeypatch.setenv("REFINE_MODELS", str(sample_models))
    cfg = yaml.safe_load((REPO / "configs" / "sample.yaml").read_text())
    entries = [
        expand_env_params(e) for e in cfg["stages"] if next(iter(e)) not in ("read", "extract")
    ]
    stages = [s for s in build_stages([{"read": {}}, *entries])[1:] if s.kind == "map"]
    assert {s.name for s in stages} >= {
        "url_filter",
        "language",
        "gopher_quality",
        "c4",
        "perplexity",
        "quality_classifier",
        "pii",
    }
    n = len(EDGE_CASES)
    table = pa.table(
        {
            "id": [f"<urn:uuid:{name}>" for name in EDGE_CASES],
            "url": [f"http://edge.example/{name}" for name in EDGE_CASES],
            "date": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
            "text": pa.array(list(EDGE_CASES.values()), pa.large_string()),
            "source": [f"edge#{i}" for i in range(n)],
        }
    )
    part = tmp_path / "part-00000.parquet"
    pq.write_table(table, part)
    folders = [(f"{i + 2:02d}_{s.name}", s) for i, s in enumerate(stages)]
    job = PartJob(
        root=str(tmp_path / "out"),
        segment_key=folders[-1][0],
        fingerprint="edge",
        stages=folders,
        partition=Partition("00000", str(part)),
        keep_intermediate=False,
    )
    result = run_part(job)
    seen: dict[str, str | None] = {}
    for folder, _ in folders:
        for row in pq.read_table(tmp_path / "out" / "stages" / folder).to_pylist():
            doc = row["id"].removeprefix("<urn:uuid:").removesuffix(">")
            if not row["kept"]:
                assert row["reason"], (folder, doc)
                seen.setdefault(doc, f"{folder}:{row['reason']}")
    stats = {s["name"]: s for s in result["stats"]}
    for s in stats.values():
        assert s["docs_in"] == s["docs_out"] + sum(s["dropped"].values())
    # the junk never survives; the clean English paragraph may (it is short for some rules)
    for doc in ("empty", "whitespace", "long_line", "chinese", "japanese", "arabic", "hebrew"):
        assert doc in seen, f"{doc} survived every filter"
