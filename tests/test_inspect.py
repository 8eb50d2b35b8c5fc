"""refine inspect / refine explain show the right documents, checked against the stage logs."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from distributed import Client
from support import run_cli
from warcgen import record, write_warc

from refine.errors import RefineError
from refine.inspect import explain, inspect
from refine.pipeline.config import PipelineConfig
from refine.pipeline.runner import Runner

GOOD = (
    "<html><body><article>"
    + "<p>The river flooded the old town again this spring, and the people who live near the "
    "water moved their furniture upstairs as they have done for many years before.</p>"
    * 6
    + "</article></body></html>"
)
SHORT = "<html><body><p>Buy now.</p></body></html>"


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    warc = tmp / "a.warc.gz"
    pages = [(f"http://good.example/{i}", GOOD.replace("river", f"river {i}")) for i in range(3)]
    pages += [(f"http://short.example/{i}", SHORT) for i in range(2)]
    write_warc(
        warc,
        [
            record("response", u, h.encode(), record_id=f"<urn:uuid:{i:04d}>")
            for i, (u, h) in enumerate(pages)
        ],
    )
    cfg = PipelineConfig(
        input=[str(warc)],
        output=str(tmp / "out"),
        stages=[
            {"read": {}},
            {"extract": {"engine": "resiliparse"}},
            {"gopher_quality": {}},
        ],
    )
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        Runner.prepare(cfg).run(c)
    return tmp / "out"


def test_inspect_shows_exactly_the_dropped_documents(run_output):
    log = pq.read_table(run_output / "stages" / "02_gopher_quality").to_pylist()
    dropped = {r["id"]: r for r in log if not r["kept"]}
    assert set(dropped) == {"<urn:uuid:0003>", "<urn:uuid:0004>"}
    rows = inspect(run_output, "gopher_quality")
    assert {r["id"] for r in rows} == set(dropped)
    for r in rows:
        assert r["reason"] == dropped[r["id"]]["reason"] == "gopher_short_doc"
        assert r["signals"]["gopher_word_count"] == dropped[r["id"]]["gopher_word_count"]
        assert r["text"] and "Buy now" in r["text"]  # the text it was judged on
    kept = inspect(run_output, "gopher_quality", kept=True, n=2)
    assert len(kept) == 2 and all(r["id"] not in dropped for r in kept)
    with pytest.raises(RefineError, match=r"no_such_reason.*its reasons: gopher_short_doc \(2\)"):
        inspect(run_output, "gopher_quality", reason="no_such_reason")


def test_explain_follows_one_document(run_output):
    fates = explain(run_output, doc_id="<urn:uuid:0004>")
    (decisions,) = fates.values()
    assert [(d.name, d.kept, d.reason) for d in decisions] == [
        ("read", True, None),
        ("extract", True, None),
        ("gopher_quality", False, "gopher_short_doc"),
    ]
    by_url = explain(run_output, url="http://good.example/1")
    assert list(by_url) == ["<urn:uuid:0001>"]
    assert all(d.kept for d in by_url["<urn:uuid:0001>"])
    with pytest.raises(RefineError, match="no document"):
        explain(run_output, doc_id="<urn:uuid:nope>")
    # a WARC-Record-ID with or without its angle brackets
    assert list(explain(run_output, doc_id="urn:uuid:0004")) == ["<urn:uuid:0004>"]


def test_cli_inspect_and_explain(run_output):
    r = run_cli("inspect", str(run_output), "--stage", "gopher_quality", "--json")
    assert r.returncode == 0, r.stderr
    assert {row["id"] for row in json.loads(r.stdout)} == {"<urn:uuid:0003>", "<urn:uuid:0004>"}
    r = run_cli("explain", str(run_output), "--id", "<urn:uuid:0003>")
    assert r.returncode == 0 and "gopher_short_doc" in r.stdout
    r = run_cli("inspect", str(run_output), "--stage", "nonesuch")
    assert r.returncode == 2 and "no stage 'nonesuch'" in r.stderr
    r = run_cli("inspect", str(run_output), "--stage", "gopher_quality", "-n", "1")
    assert r.returncode == 0 and "1 of 2 document(s) dropped" in r.stdout, r.stdout
    r = run_cli("inspect", str(run_output), "--stage", "gopher_quality", "--reason", "nosuch")
    assert r.returncode == 2 and "its reasons: gopher_short_doc (2)" in r.stderr, r.stderr


def test_cli_stages_lists_every_default():
    r = run_cli("stages")
    assert r.returncode == 0, r.stderr
    shown = r.stdout + r.stderr
    assert "PydanticUndefined" not in shown
    assert "formats: ['parquet', 'megatron', 'flat']" in shown
    assert "model: (required)" in shown  # perplexity's KenLM model has no default
