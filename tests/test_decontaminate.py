"""Benchmark decontamination: passages of an evaluation set planted into real documents are found
(verbatim, with other case and punctuation, across a line break), the right benchmark item is
reported, nothing else in the real sample is touched, ``cut`` keeps the rest of a document, and a
bad benchmark fails when the pipeline is built."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import require_shared_data, run_cli, write_config

from refine.errors import ConfigError
from refine.filters.decontaminate import (
    Decontaminate,
    contamination_table,
    load_index,
    normalised_words,
)

# Made-up quiz items (not in the crawl sample): ids, a question, a list of choices.
QUIZ = [
    {
        "qid": "astro-1",
        "question": "Which orbital resonance keeps the three inner Galilean moons locked in their "
        "characteristic period ratio around the giant planet?",
        "choices": ["Laplace resonance", "Kozai mechanism", "Lagrange point", "Roche limit"],
        "answer": 0,
    },
    {
        "qid": "bio-7",
        "question": "A marine biologist tags forty seven leatherback turtles off the coast and "
        "records how deep each one dives during the first winter night.",
        "choices": ["about 300 metres", "about 1200 metres", "under ten metres", "over 4 km"],
        "answer": 1,
    },
    {
        "qid": "chem-3",
        "question": "What tiny enzyme quietly unwinds the ladder of helix strands?",  # 10 words
        "choices": ["helicase", "ligase", "primase", "polymerase"],
        "answer": 0,
    },
    {
        "qid": "hist-2",
        "question": "Why did the lighthouse keepers of the northern archipelago petition the "
        "harbour council for copper lanterns instead of brass ones in the stormy season?",
        "choices": [
            "because copper lanterns were said to survive the salt spray of twelve winters "
            "without any visible corrosion on the hinges",
            "brass was cheaper",
            "the council insisted",
            "nobody knows",
        ],
        "answer": 0,
    },
]
READING = [  # a second benchmark, in Parquet, without ids (items are row numbers)
    {
        "passage": "The old clockmaker in the valley village repaired every pendulum by candle "
        "light because the mill stream had stopped turning the dynamo years ago."
    },
    {
        "passage": "Seven silver herons nested beside the quarry lake while the miners argued "
        "about whether the flooded tunnels could ever be pumped dry again."
    },
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def real_docs() -> list[dict]:
    data = require_shared_data()
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 697
    return rows


def write_benchmarks(folder: Path) -> list[dict]:
    quiz = folder / "quiz.jsonl"
    quiz.write_text("".join(json.dumps(r) + "\n" for r in QUIZ))
    pq.write_table(pa.Table.from_pylist(READING), folder / "reading.parquet")
    return [
        {"path": str(quiz), "id_field": "qid", "name": "quiz"},
        {"path": str(folder / "reading.parquet")},
    ]


def stage(benchmarks: list[dict], **params) -> Decontaminate:
    s = Decontaminate(Decontaminate.Params(benchmarks=benchmarks, **params))
    s.check()
    return s


def plant(text: str, passage: str) -> str:
    """``passage`` inserted at a word boundary near the middle of ``text``."""
    cut = text.find(" ", len(text) // 2)
    cut = cut if cut > 0 else len(text)
    return f"{text[:cut]} {passage} {text[cut:]}"


def table(rows: list[dict], texts: list[str] | None = None) -> pa.Table:
    texts = texts if texts is not None else [r["text"] for r in rows]
    return pa.table(
        {
            "id": [r["id"] for r in rows],
            "url": [r.get("url") for r in rows],
            "text": pa.array(texts, pa.large_string()),
        }
    )


VERBATIM = QUIZ[1]["question"]
SHOUTED = (  # other case and punctuation: still the same words
    "WHY did the Lighthouse-keepers ... no: why did the lighthouse keepers of the NORTHERN "
    "archipelago, petition the harbour council (for copper lanterns) instead of brass ones!!"
)
BROKEN = (  # across a line break and a paragraph
    "The old clockmaker in the valley village repaired\nevery pendulum by candle\n\nlight "
    "because the mill stream had stopped"
)
SHORT = "what tiny enzyme quietly unwinds the ladder of helix strands"  # whole 10-word item
CHOICE = QUIZ[3]["choices"][0].upper()  # a long answer choice


def planted(real_docs):
    texts = [r["text"] for r in real_docs]
    expect = {
        10: ("quiz", "bio-7"),
        50: ("quiz", "hist-2"),
        90: ("reading", "0"),
        130: ("quiz", "chem-3"),
        170: ("quiz", "hist-2"),
    }
    for row, passage in zip(expect, (VERBATIM, SHOUTED, BROKEN, SHORT, CHOICE), strict=True):
        texts[row] = plant(texts[row], passage)
    return texts, expect


def test_planted_passages_found_and_nothing_else(real_docs, tmp_path):
    texts, expect = planted(real_docs)
    s = stage(write_benchmarks(tmp_path))
    res = s.process(table(real_docs, texts))
    log = res.log
    hit = log.filter(pc.greater(log["decont_hits"], 0)).to_pylist()
    ids = [r["id"] for r in real_docs]
    found = {ids.index(r["id"]): (r["decont_benchmark"], r["decont_item"]) for r in hit}
    # every planted passage, with the item it came from; no false hit on the other 692 real docs
    assert found == expect
    assert all(r["reason"] == "contaminated" and not r["kept"] for r in hit)
    assert res.table.num_rows == len(real_docs) - len(expect)
    assert res.stats.dropped == {"contaminated": len(expect)}
    assert contamination_table({"counters": dict(res.stats.counters)}) == [
        ("quiz", 4),
        ("reading", 1),
    ]
    # the 23-word verbatim question gives 23 - 13 + 1 matched 13-grams
    assert log.filter(pc.equal(log["id"], ids[10]))["decont_hits"][0].as_py() == 11


def test_false_hits_on_real_docs_are_zero(real_docs, tmp_path):
    res = stage(write_benchmarks(tmp_path)).process(table(real_docs))
    assert res.table.num_rows == len(real_docs)
    assert pc.sum(res.log["decont_hits"]).as_py() == 0


def test_short_item_matched_whole_only(real_docs, tmp_path):
    bench = write_benchmarks(tmp_path)
    docs = real_docs[:3]
    texts = [
        plant(docs[0]["text"], SHORT),
        plant(docs[1]["text"], "what tiny enzyme quietly unwinds the ladder of helix"),  # 9 of 10
        plant(docs[2]["text"], "helicase"),  # a one-word choice: below min_item_words
    ]
    log = stage(bench).process(table(docs, texts)).log
    assert log["decont_hits"].to_pylist() == [1, 0, 0]
    assert log["decont_item"].to_pylist() == ["chem-3", None, None]
    # with min_item_words above the item's 10 words it is not matched at all
    log = stage(bench, min_item_words=11).process(table(docs, texts)).log
    assert log["decont_hits"].to_pylist() == [0, 0, 0]


def test_cut_removes_the_passage_and_keeps_the_rest(real_docs, tmp_path):
    bench = write_benchmarks(tmp_path)
    docs = [r for r in real_docs if len(r["text"].split()) > 300][:2]
    short = next(r for r in real_docs if 20 < len(r["text"].split()) < 60)
    texts = [plant(docs[0]["text"], VERBATIM), docs[1]["text"], plant(short["text"], SHORT)]
    s = stage(bench, action="cut", cut_margin=0, min_words_after_cut=100)
    res = s.process(table([*docs, short], texts))
    out = res.table
    assert out["id"].to_pylist() == [docs[0]["id"], docs[1]["id"]]
    # the passage is gone and the rest of the document is as it was
    assert VERBATIM not in out["text"][0].as_py()
    assert out["text"][0].as_py().split() == docs[0]["text"].split()
    assert out["text"][1].as_py() == docs[1]["text"]
    log = res.log.to_pylist()
    assert [r["reason"] for r in log] == [None, None, "contaminated_too_short_after_cut"]
    assert log[0]["decont_cut_words"] == len(VERBATIM.split())
    assert res.stats.counters["docs_cut"] == 1
    assert res.stats.counters["words_cut"] == len(VERBATIM.split())
    # a margin widens the cut by that many words on each side
    wide = stage(bench, action="cut", cut_margin=5, min_words_after_cut=100)
    res = wide.process(table(docs[:1], texts[:1]))
    assert res.log["decont_cut_words"][0].as_py() == len(VERBATIM.split()) + 10
    # (words as the stage counts them: a lone "-" between them is no word, and goes with them)
    left = normalised_words(res.table["text"]).flatten()
    assert len(left) == len(normalised_words(pa.array([docs[0]["text"]])).flatten()) - 10


def test_signals_reused_when_only_thresholds_change(real_docs, tmp_path):
    texts, expect = planted(real_docs)
    bench = write_benchmarks(tmp_path)
    first = stage(bench).process(table(real_docs, texts))
    assert first.stats.counters["signals_reused"] == 0
    strict, loose = stage(bench, max_hits=0), stage(bench, max_hits=8)
    assert strict.score_fingerprint() == loose.score_fingerprint()
    assert strict.fingerprint() != loose.fingerprint()
    again = loose.process(table(real_docs, texts), previous=first.log)
    assert again.stats.counters["signals_reused"] == len(real_docs)
    # only the 23-word question has more than 8 matched 13-grams (11); the others 1 to 8
    assert again.stats.dropped == {"contaminated": 1}
    # cut_margin shapes the signals: not a threshold
    assert stage(bench, cut_margin=1).score_fingerprint() != strict.score_fingerprint()


def test_changed_benchmark_file_changes_the_fingerprint(tmp_path):
    bench = write_benchmarks(tmp_path)
    before = stage(bench)
    quiz = Path(bench[0]["path"])
    quiz.write_text(quiz.read_text() + json.dumps({"qid": "x", "question": VERBATIM + " x"}) + "\n")
    after = stage(bench)
    assert before.score_fingerprint() != after.score_fingerprint()
    assert before.index_file() != after.index_file()
    assert len(load_index(after.index_file()).item_benchmark) == len(QUIZ) + len(READING) + 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ('{"qid": 1, "score": 2.5}\n', "no string field"),
        ('{"qid": 1, "question": "too short"}\n', "empty set"),
        ("", "empty"),
    ],
)
def test_bad_benchmark_is_a_config_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad_eval.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as e:
        stage([{"path": str(path)}])
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cli_run_and_bad_benchmark(real_docs, tmp_path):
    texts, expect = planted(real_docs)
    docs = [dict(r, text=t) for r, t in zip(real_docs, texts, strict=True)][:200]
    docs += docs[:20]  # exact duplicates, for dedup_exact
    inp = tmp_path / "docs.parquet"
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(len(docs))], "text": [d["text"] for d in docs]}),
        inp,
    )
    bench = write_benchmarks(tmp_path)
    env = {"REFINE_CACHE": str(tmp_path / "cli-cache")}
    stages = (
        f"  - read: {{}}\n  - decontaminate: {{benchmarks: {json.dumps(bench)}}}\n"
        "  - dedup_exact: {}\n"
    )
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", [str(inp)], out, stages, "cluster: {workers: 2}\n")
    r = run_cli("run", str(cfg), "--no-progress", env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (dc,) = [s for s in report["stages"] if s["name"] == "decontaminate"]
    # the index is built once on the driver into OUT, which every worker sees; not this
    # machine's cache
    assert len(list((out / "decontaminate").glob("*.npz"))) == 1
    assert not list((tmp_path / "cli-cache").rglob("*.npz"))
    # rows 10, 50, 90, 130, 170 planted; 10 is also among the 20 duplicated rows
    assert dc["dropped"] == {"contaminated": 6}
    e = run_cli("explain", str(out), "--id", "d90", "--json", env=env)
    assert e.returncode == 0, e.stderr
    (fate,) = json.loads(e.stdout).values()
    assert fate[-1]["name"] == "decontaminate" and not fate[-1]["kept"]
    assert fate[-1]["signals"]["decont_benchmark"] == "reading"
    assert fate[-1]["signals"]["decont_item"] == "0"
    # the report's contamination table: per benchmark, items hit and documents dropped
    from refine.report.data import contamination

    rows = contamination(out, dc["folder"])
    assert sum(r["dropped"] for r in rows) == 6 and all(r["cut"] == 0 for r in rows)
    assert {r["benchmark"] for r in rows} <= {"reading", "quiz"} and rows[0]["items_hit"] >= 1
    rep = run_cli("report", str(out), "--html", str(tmp_path / "r.html"), env=env)
    assert rep.returncode == 0 and "contamination by benchmark" in rep.stdout, rep.stdout
    html = (tmp_path / "r.html").read_text()
    assert "<h2>Contamination</h2>" in html and "items hit" in html
    # a missing benchmark file: exit 2, one line naming it, before any work
    missing = tmp_path / "nope.jsonl"
    bad = json.dumps([{"path": str(missing)}])
    stages = f"  - read: {{}}\n  - decontaminate: {{benchmarks: {bad}}}\n"
    cfg = write_config(tmp_path / "bad.yaml", [str(inp)], tmp_path / "out2", stages)
    r = run_cli("run", str(cfg), "--no-progress", env=env, timeout=120)
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and str(missing) in lines[0], r.stderr
    assert not (tmp_path / "out2" / "documents").exists()
