"""configs/multilingual.yaml as shipped, offline, on the sample WARCs it names."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from support import report, require_shared_data, run_cli, stage

WANTED = {"de", "fr", "es", "zh", "ja", "en"}


def test_multilingual_config_runs_offline(tmp_path):
    data = require_shared_data()
    out = tmp_path / "out"
    r = run_cli(
        "run",
        "configs/multilingual.yaml",
        "--output",
        str(out),
        "--no-progress",
        env={"REFINE_TEST_DATA": str(data)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert rep["complete"]
    # several languages kept, each by its own FineWeb-2 minimum (min_score: fineweb2)
    lang = pq.read_table(out / "stages" / stage(rep, "language")["folder"]).to_pydict()
    kept = {la for la, k in zip(lang["language"], lang["kept"], strict=True) if k}
    assert kept <= WANTED and {"de", "en", "es", "fr", "zh"} <= kept
    # Chinese pages are split into words (not one "word" per line): the heuristic filters count
    # several times more words than white space gives
    gq = stage(rep, "gopher_quality")
    log = pq.read_table(out / "stages" / gq["folder"]).to_pydict()
    docs = pq.read_table(out / "documents" / stage(rep, "extract")["folder"]).to_pydict()
    texts = dict(zip(docs["id"], docs["text"], strict=True))
    langs = dict(zip(lang["id"], lang["language"], strict=True))
    zh = [
        (n, len(texts[i].split()))
        for i, n in zip(log["id"], log["gopher_word_count"], strict=True)
        if langs.get(i) == "zh"
    ]
    assert zh and all(n > 3 * spaces for n, spaces in zh), zh
    # rehydrate: each survivor repeated by FineWeb-2's weight for its cluster size, counted
    rh = stage(rep, "rehydrate")
    assert rh["docs_out"] == rh["docs_in"] + rh["counters"].get("repeats", 0)
    final = pq.read_table(out / "documents" / stage(rep, "shuffle")["folder"])
    ids = final["id"].to_pylist()
    reps = final["repeat"].to_pylist() if "repeat" in final.column_names else [0] * len(ids)
    assert len(set(zip(ids, reps, strict=True))) == len(ids) == rh["docs_out"]
    assert set(final["language"].to_pylist()) <= WANTED
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["documents"] == rh["docs_out"]
