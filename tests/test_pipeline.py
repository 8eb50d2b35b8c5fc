"""End-to-end: `refine run` through the CLI on real crawl samples and on WARCs built here."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from support import (
    FAST_STAGES,
    REPO,
    dask_cluster,
    documents,
    http_server,
    report,
    require_shared_data,
    run_cli,
    stage,
    write_config,
)
from warcgen import record, write_warc

from refine.dedup.keyed import normalize_url

pytestmark = pytest.mark.integration

ARTICLE = (
    "<html><head><title>{title}</title></head><body><nav>Home | About | Contact</nav>"
    "<article><h1>{title}</h1>"
    + "<p>{title} is a paragraph of real prose that a reader would want to keep, written with "
    "enough words that every extractor recognises it as the main content of the page.</p>"
    * 4
    + "</article><footer>Copyright 2024</footer></body></html>"
)


def good_page(i: int) -> bytes:
    return ARTICLE.format(title=f"Article number {i}").encode()


def check_report_consistent(out: Path) -> dict:
    """The invariants every run must satisfy, checked against the files on disk."""
    rep = report(out)
    for s in rep["stages"]:
        assert s["docs_in"] == s["docs_out"] + sum(s["dropped"].values()), s
        log = pq.read_table(out / "stages" / s["folder"])
        assert log.num_rows == s["docs_in"], s["name"]
        assert (pc.sum(log["kept"]).as_py() or 0) == s["docs_out"]
    ext = stage(rep, "extract")
    docs = documents(out)
    assert docs.num_rows == ext["docs_out"]
    assert len(set(docs["id"].to_pylist())) == docs.num_rows, "a document was written twice"
    assert stage(rep, "read")["docs_out"] == ext["docs_in"]
    return rep


def test_sample_config_on_every_shared_warc(tmp_path, sample_models):
    """configs/sample.yaml as shipped (trafilatura), on every file in shared/data/warc, with the
    models scripts/train_sample_models.sh trains."""
    data = require_shared_data()
    out = tmp_path / "out"
    r = run_cli(
        "run",
        "configs/sample.yaml",
        "--output",
        str(out),
        "--no-progress",
        env={"REFINE_TEST_DATA": str(data), "REFINE_MODELS": str(sample_models)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = check_report_consistent(out)
    read = stage(rep, "read")
    warcs = sorted(p.name for p in (data / "warc").glob("*.warc.gz"))
    assert rep["inputs"]["files"] == len(warcs)
    sources = set(documents(out)["source"].to_pylist())
    files_with_docs = {s.rsplit("#", 1)[0].rsplit("/", 1)[-1] for s in sources}
    assert files_with_docs == set(warcs), "every shared WARC yields documents"
    # status-200 HTML pages: web-pages-a 505, heritrix 94, cc-main 16, wget 22 + 15
    assert read["docs_out"] == 505 + 94 + 16 + 22 + 15
    assert read["dropped"].get("http_status", 0) > 0  # the heritrix redirects and 404s
    ext = stage(rep, "extract")
    assert ext["docs_out"] >= 0.8 * ext["docs_in"]
    # extraction runs in a child process; its CPU time is counted, not only the parent's
    # (trafilatura costs far more CPU than reading; wall-clock ratios would be flaky under load)
    assert ext["cpu_seconds"] > 3 * stage(rep, "read")["cpu_seconds"]
    assert set(ext["dropped"]) <= {"no_text", "binary_content", "extract_timeout"}
    texts = documents(out)["text"].to_pylist()
    assert all(t and t.strip() for t in texts)
    # no two survivors share a normalised URL or a normalised text (ground truth computed
    # here, independently of the dedup stages), and the dedup counts add up
    final = documents(out, rep["stages"][-1]["folder"])
    urls = [normalize_url(u) for u in final["url"].to_pylist()]
    assert len(urls) == len(set(urls))
    norm_texts = [" ".join(t.lower().split()) for t in final["text"].to_pylist()]
    assert len(norm_texts) == len(set(norm_texts))
    before = stage(rep, "dedup_url")["docs_in"]
    dedups = ("dedup_url", "dedup_exact", "dedup_minhash", "dedup_lines", "dedup_substring")
    dropped = sum(sum(stage(rep, n)["dropped"].values()) for n in (*dedups, "mix"))
    assert stage(rep, "mix")["counters"].get("repeats", 0) == 0  # no budget: sampled down only
    assert final.num_rows == before - dropped
    # model_classifier labelled every document it saw; mix's shares are in report and manifest
    mlog = pq.read_table(out / "stages" / stage(rep, "model_classifier")["folder"])
    assert set(mlog["domain"].to_pylist()) <= {"prose", "lists"} and mlog.num_rows > 50
    assert set(rep["mix"]["groups"]) == {"prose", "lists"}
    # the model stages scored every document they saw and decided by the config's thresholds
    # (read here from the YAML, not from the code)
    shipped = {
        next(iter(e)): next(iter(e.values()))
        for e in yaml.safe_load((REPO / "configs" / "sample.yaml").read_text())["stages"]
        if isinstance(e, dict)
    }
    ppl, clf = stage(rep, "perplexity"), stage(rep, "quality_classifier")
    assert ppl["docs_in"] > 50 and clf["docs_in"] == ppl["docs_out"]
    plog = pq.read_table(out / "stages" / ppl["folder"]).to_pylist()
    assert all(row["ppl"] is not None and row["ppl"] > 1 for row in plog)
    max_ppl = shipped["perplexity"]["max_ppl"]
    assert [row["kept"] for row in plog] == [row["ppl"] <= max_ppl for row in plog]
    clog = pq.read_table(out / "stages" / clf["folder"]).to_pylist()
    min_score = shipped["quality_classifier"]["min_score"]
    assert all(0 <= row["quality_score"] <= 1 for row in clog)
    assert [row["kept"] for row in clog] == [row["quality_score"] >= min_score for row in clog]
    # it ends with token shards that verify, and the counts agree with report.json
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    tok = stage(rep, "tokenize")
    assert tok["counters"]["tokens"] == manifest["tokens"] > 0
    assert manifest["mix"] == rep["mix"] and manifest["tokens"] == rep["mix"]["tokens"]
    assert tok["docs_out"] == manifest["documents"] == rep["stages"][-2]["docs_out"]
    r3 = run_cli("verify", str(out))
    assert r3.returncode == 0, r3.stdout[-2000:] + r3.stderr[-2000:]
    assert json.loads(r3.stdout)["ok"] is True
    # the report command reads what run wrote
    r2 = run_cli("report", str(out))
    assert r2.returncode == 0 and "01_extract" in r2.stdout
    row = next(line for line in r2.stdout.splitlines() if "01_extract" in line)
    assert str(ext["docs_in"]) in row and str(ext["docs_out"]) in row


def test_corrupt_and_junk_inputs_are_counted_and_the_run_completes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = [record("response", f"http://ok.example/{i}", good_page(i)) for i in range(6)]
    write_warc(src / "good.warc.gz", good)
    more = [record("response", f"http://more.example/{i}", good_page(i)) for i in range(6)]
    whole = b"".join(gzip.compress(r) for r in more[:4])
    (src / "truncated.warc.gz").write_bytes(whole[: len(whole) * 5 // 8])
    junk = gzip.compress(more[4]) + b"\x00JUNK" * 200 + gzip.compress(more[5])
    (src / "junk.warc.gz").write_bytes(junk)
    (src / "notwarc.warc.gz").write_bytes(gzip.compress(b"just some text\n" * 50))
    (src / "empty.warc.gz").write_bytes(b"")
    write_warc(
        src / "odd.warc.gz",
        [
            record("response", "http://bin.example/", os.urandom(4000) + b"\x00" * 100),
            record("response", "http://big.example/", b"<html>" + b"a" * (3 * 2**20)),
            record("response", "http://img.example/x.png", b"\x89PNG...", content_type="image/png"),
            record("response", "http://ok.example/odd", good_page(99)),
        ],
    )
    out = tmp_path / "out"
    stages = "  - read: {slice_mb: 1, max_page_mb: 1}\n  - extract: {engine: resiliparse}\n"
    cfg = write_config(tmp_path / "c.yaml", [str(src)], out, stages)
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = check_report_consistent(out)
    read, ext = stage(rep, "read"), stage(rep, "extract")
    for reason in ("truncated", "not_warc", "not_html", "page_too_large"):
        assert read["dropped"].get(reason, 0) >= 1, (reason, read["dropped"])
    assert ext["dropped"].get("binary_content") == 1
    examples = {e["reason"]: e["source"] for e in read["errors"]}
    assert examples["not_warc"].endswith("notwarc.warc.gz#0")
    assert "#" in examples["truncated"]
    urls = set(documents(out)["url"].to_pylist())
    # every good page that was whole on disk survives, on both sides of the damage
    whole_pages = {f"http://ok.example/{i}" for i in range(6)} | {"http://ok.example/odd"}
    whole_pages |= {"http://more.example/0", "http://more.example/1"}  # before the cut
    whole_pages |= {"http://more.example/4", "http://more.example/5"}  # around the junk
    assert whole_pages <= urls
    assert read["dropped"].get("corrupt_record", 0) >= 1


def _run_fast(tmp_path: Path, inputs: list[str], name: str, *extra: str) -> Path:
    out = tmp_path / name
    cfg = write_config(tmp_path / f"{name}.yaml", inputs, out, FAST_STAGES)
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress", *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_kill_and_resume_gives_the_same_documents(tmp_path):
    """kill -9 the whole run mid-way; the same command finishes it without redoing parts."""
    data = require_shared_data()
    warc = str(data / "warc" / "web-pages-a.warc.gz")
    reference = _run_fast(tmp_path, [warc], "reference")

    out = tmp_path / "killed"
    stages = "  - read: {slice_mb: 0.25}\n  - extract: {engine: trafilatura, timeout: 20}\n"
    cfg = write_config(tmp_path / "killed.yaml", [warc], out, stages)
    cmd = [sys.executable, "-m", "refine.cli", "run", str(cfg), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    done_dir = out / "_state" / "done" / "01_extract"
    deadline = time.time() + 300
    while time.time() < deadline:
        if done_dir.is_dir() and len(list(done_dir.glob("part-*.json"))) >= 4:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {
        p.name: p.stat().st_mtime_ns for p in (out / "documents" / "01_extract").glob("part-*")
    }
    total = len(list((out / "stages" / "00_read").glob("*")))
    assert finished and not (out / "report.json").exists()

    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = check_report_consistent(out)
    assert rep["parts"]["resumed"] >= len(finished) >= 4
    assert rep["parts"]["resumed"] < rep["parts"]["total"], (total, rep["parts"])
    after = {
        p.name: p.stat().st_mtime_ns for p in (out / "documents" / "01_extract").glob("part-*")
    }
    for name, mtime in finished.items():
        assert after[name] == mtime, f"{name} was recomputed"
    assert not [p for p in out.rglob(".tmp-*")], "temporary files left behind"

    # the resumed trafilatura run has the same documents as an uninterrupted trafilatura run
    clean = tmp_path / "clean"
    cfg2 = write_config(tmp_path / "clean.yaml", [warc], clean, stages)
    assert run_cli("run", str(cfg2), "--workers", "2", "--no-progress").returncode == 0
    a, b = documents(out), documents(clean)
    assert a["id"].to_pylist() == b["id"].to_pylist()
    assert a["text"].to_pylist() == b["text"].to_pylist()
    # and slicing does not change which pages are read (1 MiB slices vs 0.25 MiB slices)
    ref_read = pq.read_table(reference / "stages" / "00_read").sort_by("id")["id"].to_pylist()
    new_read = pq.read_table(out / "stages" / "00_read").sort_by("id")["id"].to_pylist()
    assert ref_read == new_read


def test_rerun_resumes_everything_and_changed_params_recompute(tmp_path):
    data = require_shared_data()
    warc = str(data / "warc" / "wget-sample-0000.warc.gz")
    out = _run_fast(tmp_path, [warc], "out")
    first = documents(out)
    rep = report(out)
    assert rep["parts"]["resumed"] == 0
    out2 = _run_fast(tmp_path, [warc], "out")
    rep2 = report(out2)
    assert rep2["parts"]["resumed"] == rep2["parts"]["total"]
    assert documents(out2).equals(first)
    assert [s["docs_out"] for s in rep2["stages"]] == [s["docs_out"] for s in rep["stages"]]
    # a different extraction engine invalidates the extract checkpoint
    cfg = write_config(
        tmp_path / "tra.yaml",
        [warc],
        out,
        "  - read: {slice_mb: 1}\n  - extract: {engine: trafilatura}\n",
    )
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    rep3 = report(out)
    assert rep3["parts"]["resumed"] == 0
    check_report_consistent(out)


def test_keep_intermediate_writes_every_stage(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_warc(
        src / "a.warc.gz",
        [record("response", f"http://a.example/{i}", good_page(i)) for i in range(3)],
    )
    out = _run_fast(tmp_path, [str(src / "a.warc.gz")], "out", "--keep-intermediate")
    pages = pq.read_table(out / "documents" / "00_read")
    assert pages.num_rows == 3 and "html" in pages.column_names
    assert documents(out).num_rows == 3


def test_http_input_matches_local_read(tmp_path):
    data = require_shared_data()
    shutil.copy(data / "warc" / "wget-sample-0001.warc.gz", tmp_path / "w.warc.gz")
    local = _run_fast(tmp_path, [str(tmp_path / "w.warc.gz")], "local")
    with http_server(tmp_path) as base:
        remote = _run_fast(tmp_path, [base + "w.warc.gz"], "remote")
    a, b = documents(local), documents(remote)
    assert a.num_rows > 0
    assert a["id"].to_pylist() == b["id"].to_pylist()
    assert a["text"].to_pylist() == b["text"].to_pylist()
    assert all(s.startswith(base) for s in b["source"].to_pylist())


def test_crawl_id_expands_through_warc_paths(tmp_path):
    """configs/web.yaml's shape, served by a local stand-in for data.commoncrawl.org."""
    data = require_shared_data()
    site = tmp_path / "site"
    crawl = site / "crawl-data" / "CC-MAIN-2099-01"
    (crawl / "segments").mkdir(parents=True)
    names = [
        "wget-sample-0000.warc.gz",
        "wget-sample-0001.warc.gz",
        "cc-main-2020-34-sample.warc.gz",
    ]
    for n in names:
        shutil.copy(data / "warc" / n, crawl / "segments" / n)
    listing = "".join(f"crawl-data/CC-MAIN-2099-01/segments/{n}\n" for n in names)
    (crawl / "warc.paths.gz").write_bytes(gzip.compress(listing.encode()))
    cfg = yaml.safe_load((REPO / "configs" / "web.yaml").read_text())
    out = tmp_path / "out"
    with http_server(site) as base:
        cfg["input"] = ["CC-MAIN-2099-01"]
        cfg["output"] = str(out)
        cfg["stages"][0]["read"].update(
            commoncrawl_base_url=base, max_files=2, max_records_per_file=5
        )
        cfg["stages"][1]["extract"]["engine"] = "resiliparse"
        # offline: the stages whose models or tokenizer come from the hub are left out here
        # (test_plan.py checks that `refine plan` names where they come from)
        hub = {"perplexity", "quality_classifier", "tokenize"}
        cfg["stages"] = [st for st in cfg["stages"] if next(iter(st)) not in hub]
        path = tmp_path / "web.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r = run_cli("run", str(path), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = check_report_consistent(out)
    assert rep["inputs"]["files"] == 2
    assert stage(rep, "read")["docs_in"] == 10  # 5 pages from each of 2 files
    files = {
        s.split("#")[0].rsplit("/", 1)[-1]
        for s in pq.read_table(out / "stages" / "00_read")["source"].to_pylist()
    }
    assert files == set(names[:2])


def test_external_dask_scheduler_and_worker_processes(tmp_path):
    data = require_shared_data()
    warc = str(data / "warc" / "wget-sample-0000.warc.gz")
    with dask_cluster(2) as (address, _):
        out = _run_fast(tmp_path, [warc], "out", "--scheduler", address)
    rep = check_report_consistent(out)
    assert rep["cluster"]["scheduler"] == address
    assert rep["cluster"]["workers"] == 2
    local = _run_fast(tmp_path, [warc], "local")
    assert documents(out)["id"].to_pylist() == documents(local)["id"].to_pylist()


def test_unwritable_output_fails_before_work(tmp_path):
    src = tmp_path / "a.warc.gz"
    write_warc(src, [record("response", "http://a.example/", good_page(1))])
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = write_config(tmp_path / "c.yaml", [str(src)], blocker / "out", FAST_STAGES)
    r = run_cli("run", str(cfg), "--no-progress")
    assert r.returncode == 2, r.stderr
    assert "not writable" in r.stderr and "Traceback" not in r.stderr


def test_failed_parts_are_reported_and_the_rerun_retries_only_them(tmp_path):
    """A WARC server that fails for part of a file: the run finishes every other part, exits 1
    with one line, and the same command later completes it with the same documents."""
    data = require_shared_data()
    shutil.copy(data / "warc" / "web-pages-a.warc.gz", tmp_path / "w.warc.gz")
    size = (tmp_path / "w.warc.gz").stat().st_size
    local = _run_fast(tmp_path, [str(tmp_path / "w.warc.gz")], "local")
    out = tmp_path / "remote"
    control = {"fail_from": size // 2}
    with http_server(tmp_path, control) as base:
        cfg = write_config(
            tmp_path / "remote.yaml",
            [base + "w.warc.gz"],
            out,
            FAST_STAGES,
            extra="cluster: {retries: 1}\n",
        )
        r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
        assert r.returncode == 1, r.stderr[-3000:]
        assert "re-run the same command" in r.stderr and "Traceback" not in r.stderr
        rep = report(out)
        assert rep["complete"] is False and rep["failed_parts"]
        n_failed = len(rep["failed_parts"])
        assert all("503" in f["error"] or "Slow Down" in f["error"] for f in rep["failed_parts"])
        assert 0 < rep["parts"]["total"] - n_failed
        control["fail_from"] = None  # the server recovers
        r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = check_report_consistent(out)
    assert rep["complete"] is True
    assert rep["parts"]["resumed"] == rep["parts"]["total"] - n_failed
    assert documents(out)["id"].to_pylist() == documents(local)["id"].to_pylist()
    assert documents(out)["text"].to_pylist() == documents(local)["text"].to_pylist()


def test_changed_threshold_refilters_from_saved_signals(tmp_path):
    """Re-running with only a threshold changed re-applies it to the saved signals: extraction
    is resumed, no document is scored again, and the decisions follow the new threshold."""
    data = require_shared_data()
    warc = str(data / "warc" / "wget-sample-0000.warc.gz")
    out = tmp_path / "out"

    def run(min_words: int) -> dict:
        stages = (
            FAST_STAGES
            + "  - gopher_repetition: {}\n"
            + f"  - gopher_quality: {{min_doc_words: {min_words}}}\n"
        )
        cfg = write_config(tmp_path / "c.yaml", [warc], out, stages)
        r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
        return check_report_consistent(out)

    first = run(50)
    extract_parts = stage(first, "extract")["parts"]
    second = run(400)
    quality = stage(second, "gopher_quality")
    assert second["parts"]["resumed"] == extract_parts  # extraction was not redone
    assert quality["counters"]["signals_reused"] == quality["docs_in"] > 0
    assert stage(second, "gopher_repetition")["counters"]["signals_reused"] > 0
    log = pq.read_table(out / "stages" / "03_gopher_quality").to_pylist()
    for row in log:
        if row["gopher_word_count"] < 400:
            assert not row["kept"] and row["reason"] == "gopher_short_doc"
    assert quality["dropped"]["gopher_short_doc"] > stage(first, "gopher_quality")["dropped"].get(
        "gopher_short_doc", 0
    )


def test_server_that_never_answers_fails_in_seconds_not_forever(tmp_path):
    """A URL whose server accepts the connection and then says nothing: the run stops with one
    clear line after read.http_timeout, before any work, instead of hanging."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        out = tmp_path / "out"
        stages = "  - read: {http_timeout: 2}\n  - extract: {engine: resiliparse}\n"
        url = f"http://127.0.0.1:{port}/never.warc.gz"
        cfg = write_config(tmp_path / "c.yaml", [url], out, stages)
        t0 = time.time()
        r = run_cli("run", str(cfg), "--no-progress", timeout=120)
        assert time.time() - t0 < 60
        assert r.returncode == 2, r.stderr
        assert url in r.stderr and "Traceback" not in r.stderr
    finally:
        listener.close()


def test_progress_display_shows_keep_rate_and_rate(tmp_path):
    src = tmp_path / "a.warc.gz"
    write_warc(src, [record("response", f"http://a.example/{i}", good_page(i)) for i in range(3)])
    cfg = write_config(tmp_path / "c.yaml", [str(src)], tmp_path / "out", FAST_STAGES)
    r = run_cli("run", str(cfg), "--workers", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    bar = lines[lines.index("read + extract") + 1]  # the segment's stages, then its bar
    assert "1/1 parts" in bar and "kept 3 (100.0%)" in bar and "docs/s" in bar, bar


def test_end_summary_says_where_the_outputs_are_and_how_long_it_took(tmp_path):
    """After the table: the final documents, the dataset shards and the tokens (as the tokens'
    manifest.json counts them), each with its folder, then the run's wall time."""
    text = require_shared_data() / "text" / "cc-main-2019-30-en.jsonl.gz"
    out = tmp_path / "out"
    stages = "  - read: {}\n  - pii: {}\n  - tokenize: {}\n"
    cfg = write_config(tmp_path / "c.yaml", [str(text)], out, stages)
    r = run_cli("run", str(cfg), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    dataset = report(out)["dataset"]
    assert manifest["tokens"] > 0 and dataset["documents"] == manifest["documents"] > 0
    lines = r.stderr.splitlines()
    assert f"documents: {dataset['documents']:,} in {out}/documents/02_tokenize" in lines
    assert f"dataset: {dataset['shards']} parquet shard(s) in {out}/dataset" in lines
    shards = f"{len(manifest['shards'])} shard(s): parquet, megatron, flat"
    tokens = f"tokens: {manifest['tokens']:,} ({manifest['documents']:,} documents, {shards})"
    assert f"{tokens} in {out}/tokens" in lines
    assert re.fullmatch(r"wall time: \d+\.\d s", lines[-2]) and lines[-1].startswith("report: ")


def test_progress_display_counts_global_stage_phases(tmp_path):
    """A global stage shows a bar per phase (its Dask tasks, all done) and a closing line whose
    documents in -> out are report.json's."""
    src = tmp_path / "a.warc.gz"
    pages = [record("response", f"http://a.example/{i}", good_page(i % 2)) for i in range(4)]
    write_warc(src, pages)
    stages = FAST_STAGES + "  - dedup_exact: {}\n"
    cfg = write_config(tmp_path / "c.yaml", [str(src)], tmp_path / "out", stages)
    r = run_cli("run", str(cfg), "--workers", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    phases = [x for x in lines if x.startswith("dedup_exact · ")]
    assert phases, r.stderr[-2000:]
    for line in phases:  # "n/n tasks": every task of the phase was counted as done
        done, total = line.split()[-3].split("/")
        assert done == total and int(total) > 0, line
    stage = next(s for s in report(tmp_path / "out")["stages"] if s["name"] == "dedup_exact")
    closing = next(x for x in lines if x.startswith("dedup_exact: "))
    assert f"{stage['docs_in']} -> {stage['docs_out']} docs" in closing
    assert (stage["docs_in"], stage["docs_out"]) == (4, 2)


def test_language_prefilter_is_a_counted_extract_drop(tmp_path):
    """extract with ``prefilter_languages``: pages skipped before trafilatura are reported as the
    extract stage's "language_prefilter" drops (a decision, no error sample), the rest extracted."""
    german = (
        "<html><body><article>"
        + "<p>Dies ist ein deutscher Absatz mit genug Wörtern, damit jede Spracherkennung ihn "
        "sicher als Deutsch erkennt, und er steht im Hauptinhalt der Seite.</p>"
        * 4
        + "</article></body></html>"
    ).encode()
    records = [record(url=f"http://en.example/{i}", http_body=good_page(i)) for i in range(3)]
    records += [record(url=f"http://de.example/{i}", http_body=german) for i in range(2)]
    warc = write_warc(tmp_path / "mixed.warc.gz", records)
    out = tmp_path / "out"
    stages = "  - read: {}\n  - extract: {engine: trafilatura, prefilter_languages: [en]}\n"
    cfg = write_config(tmp_path / "c.yaml", [str(warc)], out, stages)
    r = run_cli("run", str(cfg), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    ext = stage(check_report_consistent(out), "extract")
    assert ext["dropped"] == {"language_prefilter": 2} and ext["docs_out"] == 3
    assert not ext.get("errors")
    urls = sorted(documents(out)["url"].to_pylist())
    assert urls == [f"http://en.example/{i}" for i in range(3)]
