"""``by: language`` on the dedup stages: identical documents labelled with different languages
both survive (FineWeb-2 deduplicates each language separately), one survives without it."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from refine.dedup.keyed import DedupExact
from refine.dedup.lines import DedupLines
from refine.dedup.minhash import DedupMinhash
from refine.dedup.substring import DedupSubstring
from refine.errors import ConfigError
from refine.pipeline.config import PipelineConfig, build_stages
from refine.pipeline.runner import Runner
from refine.pipeline.stage import GlobalContext


def _text(seed: int) -> str:
    """Six lines of made-up words (letters only), long enough for every dedup stage."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6)) for _ in range(60)]
    return "\n".join(" ".join(words[i : i + 10]) for i in range(0, 60, 10))


#: (id, url, text, language): a/b the same page in two languages, c/d and e/f copies within one
#: language (e/f with no language at all), g a page of its own
DOCS = [
    ("a", "http://x.example/1", _text(1), "deu_Latn"),
    ("b", "http://x.example/1", _text(1), "fra_Latn"),
    ("c", "http://x.example/2", _text(2), "deu_Latn"),
    ("d", "http://x.example/2", _text(2), "deu_Latn"),
    ("e", "http://x.example/3", _text(3), None),
    ("f", "http://x.example/3", _text(3), None),
    ("g", "http://x.example/4", _text(4), "fra_Latn"),
]

#: the survivors of each stage, by language and over all documents (dedup_lines with
#: max_occurrences 1 removes every line seen twice, dedup_substring every copied span: whole
#: documents go when all their text does)
CASES = {
    "dedup_url": ({"a", "b", "c", "e", "g"}, {"a", "c", "e", "g"}),
    "dedup_exact": ({"a", "b", "c", "e", "g"}, {"a", "c", "e", "g"}),
    "dedup_minhash": ({"a", "b", "c", "e", "g"}, {"a", "c", "e", "g"}),
    "dedup_lines": ({"a", "b", "g"}, {"g"}),
    "dedup_substring": ({"a", "b", "c", "e", "g"}, {"a", "c", "e", "g"}),
}


def _params(stage: str, by: str | None, shuffled: bool) -> dict:
    params = {"max_occurrences": 1} if stage == "dedup_lines" else {}
    if shuffled:  # Dask's shuffles instead of the one-task grouping
        params["single_task_rows"] = 0
    return params if by is None else {**params, "by": by}


@pytest.mark.parametrize(
    "stage, shuffled",
    [(stage, False) for stage in CASES]
    + [(stage, True) for stage in ("dedup_exact", "dedup_minhash", "dedup_lines")],
)
def test_same_page_in_two_languages_survives_by_language(stage, shuffled, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": i, "url": u, "text": t, "language": lang}) + "\n"
            for i, u, t, lang in DOCS
        )
    )
    by_language, over_all = CASES[stage]
    for by, want in (("language", by_language), ("all", over_all), (None, over_all)):
        out = tmp_path / f"out-{by}"
        cfg = PipelineConfig(
            input=[str(corpus)],
            output=str(out),
            stages=[{"read": {"slice_mb": 0.001}}, {stage: _params(stage, by, shuffled)}],
        )
        with Client(
            processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as client:
            summary = Runner.prepare(cfg).run(client)
        kept = set(pq.read_table(out / "documents" / f"01_{stage}")["id"].to_pylist())
        assert kept == want, (stage, by)
        assert summary.report["stages"][1]["docs_out"] == len(want)


@pytest.mark.parametrize("cls", [DedupExact, DedupMinhash, DedupLines, DedupSubstring])
def test_by_language_without_a_language_column_names_the_part(cls, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    part = inp / "part-00000.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": [_text(1), _text(1)]}), part)
    stage = cls(cls.Params(by="language"))
    ctx = GlobalContext(
        input_dir=str(inp),
        output_dir=str(tmp_path / "out"),
        log_dir=str(tmp_path / "log"),
        work_dir=str(tmp_path / "work"),
        client=None,
    )
    with Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as client:
        ctx.client = client
        with pytest.raises(ConfigError, match=f"{cls.name}: by: language, but .*part-00000"):
            stage.run(ctx)


def test_by_is_validated_when_the_pipeline_is_built():
    with pytest.raises(ConfigError, match="dedup_exact.by"):
        build_stages([{"read": {}}, {"dedup_exact": {"by": "script"}}])
