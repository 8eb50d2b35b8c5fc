"""Bad input at the scale of whole files and whole runs (issue 8): an input URL whose server
never answers, an empty input list, and a corpus of hostile records run end to end with the
memory of the whole process tree measured."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import shutil
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from support import REPO, _RangeHandler, report, require_shared_data, run_cli, stage, write_config
from test_hostile_html import LAUGHS, NESTED
from test_hostile_html import good_page as _page
from warcgen import gz, record, write_warc

pytestmark = pytest.mark.integration


class _SilentHandler(_RangeHandler):
    """Static files, except the names in ``server.silent``: those connections are accepted
    and never answered (until the server is released)."""

    def send_head(self):
        if self.path.rsplit("/", 1)[-1] in self.server.silent:
            self.server.released.wait(300)
            self.close_connection = True
            return None
        return super().send_head()


@contextlib.contextmanager
def _server(directory: Path) -> Iterator[tuple[str, set[str]]]:
    handler = functools.partial(_SilentHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.control, server.silent, server.released = {}, set(), threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server.silent
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()


def _ids(out: Path, folder: str) -> list[str]:
    return sorted(pq.read_table(out / "documents" / folder, columns=["id"])["id"].to_pylist())


def test_unreachable_input_is_reported_the_rest_completes_and_a_rerun_reads_it(tmp_path):
    """One of two input URLs sits on a server that accepts and never answers: the run reads
    the other one through every stage (global ones included), reports the silent one with its
    reason and exits 1 in one line; when the server answers again, the same command reads only
    the missing file and recomputes the global stage over everything."""
    data = require_shared_data()
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(data / "warc" / "wget-sample-0000.warc.gz", site / "a.warc.gz")
    shutil.copy(data / "warc" / "wget-sample-0001.warc.gz", site / "b.warc.gz")
    stages = (
        "  - read: {slice_mb: 1, http_timeout: 2}\n  - extract: {engine: resiliparse}\n"
        "  - dedup_exact: {}\n"
    )
    with _server(site) as (base, silent):
        inputs = [base + "a.warc.gz", base + "b.warc.gz"]
        clean = tmp_path / "clean"
        cfg = write_config(tmp_path / "clean.yaml", inputs, clean, stages)
        r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]

        silent.add("b.warc.gz")
        out = tmp_path / "out"
        cfg = write_config(tmp_path / "out.yaml", inputs, out, stages)
        t0 = time.time()
        r = run_cli("run", str(cfg), "--workers", "2", "--no-progress", timeout=300)
        assert time.time() - t0 < 120, "planning waited far longer than http_timeout"
        assert r.returncode == 1, r.stderr[-3000:]
        errors = [line for line in r.stderr.splitlines() if line.startswith("refine: error:")]
        assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert inputs[1] in errors[0] and "re-run the same command" in errors[0]
        rep = report(out)
        assert rep["complete"] is False and rep["inputs"]["unreachable"] == 1
        ((failed,),) = [rep["failed_inputs"]]
        assert failed["url"] == inputs[1] and failed["error"].startswith("timed out"), failed
        read = stage(rep, "read")
        assert read["counters"]["inputs_unreachable"] == 1
        assert {"reason": "input_unreachable", "source": inputs[1]}.items() <= read["errors"][
            0
        ].items()
        # everything from the reachable file went through every stage
        sources = pq.read_table(out / "stages" / "00_read", columns=["source"])["source"]
        assert sources.to_pylist() and all(s.startswith(inputs[0]) for s in sources.to_pylist())
        clean_docs = pq.read_table(clean / "documents" / "02_dedup_exact").to_pylist()
        from_a = sorted(d["id"] for d in clean_docs if d["source"].startswith(inputs[0]))
        assert _ids(out, "02_dedup_exact") == from_a
        extracted = {
            p.name: p.stat().st_mtime_ns for p in (out / "documents" / "01_extract").iterdir()
        }

        silent.clear()  # the server answers again
        r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert rep["complete"] is True and rep["failed_inputs"] == []
    assert rep["parts"]["resumed"] == len(extracted) == 1  # a's part; b's part and dedup ran
    assert rep["parts"]["total"] == 3
    for name, mtime in extracted.items():
        assert (out / "documents" / "01_extract" / name).stat().st_mtime_ns == mtime
    for folder in ("01_extract", "02_dedup_exact"):
        assert _ids(out, folder) == _ids(clean, folder), folder
    counts = [(s["docs_in"], s["docs_out"]) for s in rep["stages"]]
    assert counts == [(s["docs_in"], s["docs_out"]) for s in report(clean)["stages"]]


def test_an_empty_input_list_is_an_error_before_work(tmp_path):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    site = tmp_path / "site"
    (site / "crawl-data" / "CC-MAIN-2099-01").mkdir(parents=True)
    (site / "crawl-data" / "CC-MAIN-2099-01" / "warc.paths.gz").write_bytes(gzip.compress(b""))
    with _server(site) as (base, _):
        for inputs, stages, expected in [
            ("[]", "  - read: {}\n", "no input given"),
            (f"[{str(empty_dir)!r}]", "  - read: {}\n", "matched no files"),
            ("[CC-MAIN-2099-01]", f"  - read: {{commoncrawl_base_url: {base!r}}}\n", "no files"),
        ]:
            out = tmp_path / "out"
            cfg = tmp_path / "c.yaml"
            cfg.write_text(f"input: {inputs}\noutput: {str(out)!r}\nstages:\n{stages}")
            r = run_cli("run", str(cfg), "--no-progress")
            assert r.returncode == 2, r.stderr
            lines = [line for line in r.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and expected in lines[0], r.stderr
            assert not out.exists()


# -- a hostile corpus, end to end, in bounded memory ----------------------------------------


#: Byte sequences that are never valid UTF-8: a lone continuation byte, bytes that never occur,
#: an overlong "/", a UTF-16 surrogate, a code point above U+10FFFF, a cut 3-byte sequence.
BAD_UTF8 = [b"\x80", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]


def _invalid_utf8_pages() -> dict[str, bytes]:
    """The same good page with invalid UTF-8 at every kind of position: before the first byte,
    inside the doctype and a tag name, in an attribute, the title, the text, the last byte; and
    one page with an invalid byte every 7 bytes."""
    base = b'<!DOCTYPE html><html lang="en">' + _page("harbour")[len(b"<html>") :]
    spots = {
        "start": 0,
        "doctype": 5,
        "tag_name": base.index(b"<html") + 3,
        "attribute": base.index(b'"en"') + 2,
        "title": base.index(b"<title>") + 8,
        "text": base.index(b"committee") + 4,
        "end": len(base),
    }
    pages = {}
    for i, (where, at) in enumerate(spots.items()):
        bad = BAD_UTF8[i % len(BAD_UTF8)]
        pages[f"utf8_{where}"] = base[:at] + bad + base[at:]
    everywhere = bytearray(base)
    for i in range(0, len(everywhere), 7):
        everywhere[i] = 0xFF if i % 2 else 0xC3
    pages["utf8_everywhere"] = bytes(everywhere)
    return pages


def _gzip_bomb(decoded_mib: int) -> bytes:
    """A gzip body that decodes to ``decoded_mib`` MiB of zeros (about 1000:1)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    return b"".join(z.compress(chunk) for _ in range(decoded_mib)) + z.flush()


def _hostile_corpus(folder: Path) -> dict[str, set[str | None]]:
    """WARC files with every kind of bad record beside good pages; returns url -> the reasons
    it may end with (None: must be kept)."""
    folder.mkdir()
    expect: dict[str, set[str | None]] = {}
    recs = []

    def add(name: str, reasons: set[str | None], **kw) -> None:
        url = f"http://hostile.example/{name}"
        expect[url] = reasons
        recs.append(record(url=url, **kw))

    extract_problems = {None, "no_text", "extract_timeout", "extract_crashed", "extract_error"}
    for topic in ("library", "harbour", "orchard", "railway"):
        add(f"good_{topic}", {None}, http_body=_page(topic))
    add("nested", extract_problems, http_body=NESTED)
    add("billion_laughs", extract_problems, http_body=LAUGHS)
    for name, html in _invalid_utf8_pages().items():
        add(name, extract_problems | {"binary_content"}, http_body=html)
    add("page_50mb", {"page_too_large"}, http_body=b"<html><body>" + b"<p>word</p>" * 4_800_000)
    add(
        "gzip_bomb",
        {"content_encoding"},
        http_body=_gzip_bomb(1024),
        http_headers={"Content-Encoding": "gzip"},
    )
    add("no_status_line", {"corrupt_record"}, http_body=_page("x"), status_line=b"")
    add("lying_length", {"corrupt_record"}, http_body=_page("y"), content_length=50)
    add("good_after_all_that", {None}, http_body=_page("meadow"))
    write_warc(folder / "hostile.warc.gz", recs)
    # a file cut in the middle of its last gzip member
    cut = [record(url=f"http://cut.example/{i}", http_body=_page(f"cut {i}")) for i in range(3)]
    whole = b"".join(gz(r) for r in cut)
    last = len(gz(cut[2]))
    (folder / "truncated.warc.gz").write_bytes(whole[: len(whole) - last // 2])
    expect["http://cut.example/0"] = expect["http://cut.example/1"] = {None}
    return expect


_MEASURED = r"""
import ctypes, os, resource, subprocess, sys, time
import psutil
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans are reaped (counted) here
rc = subprocess.call(sys.argv[1:])
deadline = time.time() + 20
for child in psutil.Process().children():
    try:
        child.wait(max(0.1, deadline - time.time()))
    except psutil.TimeoutExpired:
        child.kill()
        child.wait()
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("PEAK_PROCESS_RSS_KB", peak, file=sys.stderr)
sys.exit(rc)
"""


def _run_measured(*args: str) -> tuple[subprocess.CompletedProcess, int, int]:
    """Run the CLI; return its result, the peak RSS of its largest process (kernel accounting,
    every descendant) and the peak of the whole tree's RSS summed (sampled every 50 ms)."""
    cmd = [sys.executable, "-c", _MEASURED, sys.executable, "-m", "refine.cli", *args]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    root = psutil.Process(proc.pid)
    tree_peak = 0
    out = err = ""
    deadline = time.time() + 600
    while True:
        try:
            o, e = proc.communicate(timeout=0.05)
            out, err = out + o, err + e
            break
        except subprocess.TimeoutExpired:
            pass
        assert time.time() < deadline, "the run did not finish"
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        tree_peak = max(tree_peak, total)
    peak_kb = int(next(x for x in err.splitlines() if x.startswith("PEAK_")).split()[-1])
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    return result, peak_kb * 1024, tree_peak


def test_hostile_corpus_end_to_end_in_bounded_memory(tmp_path):
    """10^5 nested elements, an entity expansion bomb, invalid UTF-8 in every position, a 50 MB
    page, a 1 GiB gzip bomb, headers without a status line, a lying Content-Length and a
    truncated file, beside good pages: each bad record gets its reason, the good ones survive,
    the run completes, and no process (nor the tree) grows anywhere near the bombs' sizes."""
    expect = _hostile_corpus(tmp_path / "in")
    out = tmp_path / "out"
    stages = (
        "  - read: {slice_mb: 1}\n"
        "  - extract: {engine: trafilatura, timeout: 10, memory_limit_mb: 1024}\n"
    )
    cfg = write_config(tmp_path / "c.yaml", [str(tmp_path / "in")], out, stages)
    r, process_peak, tree_peak = _run_measured("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    gib = 1 << 30
    # measured here: largest process ~0.16 GiB, the whole tree ~0.7 GiB; the decoded bomb
    # (1 GiB) or the expanded entities (~3 GB) held once would not fit
    assert process_peak < 1 * gib, f"largest process peaked at {process_peak / gib:.2f} GiB"
    assert tree_peak < 3 * gib, f"the process tree peaked at {tree_peak / gib:.2f} GiB"

    logs = {
        folder: {row["url"]: row for row in pq.read_table(out / "stages" / folder).to_pylist()}
        for folder in ("00_read", "01_extract")
    }
    kept = set(pq.read_table(out / "documents" / "01_extract", columns=["url"])["url"].to_pylist())
    for url, reasons in expect.items():
        row = logs["00_read"].get(url)
        assert row is not None, f"{url} got no decision"
        reason = row["reason"] if row["reason"] else logs["01_extract"][url]["reason"]
        assert reason in reasons, (url, reason, row["detail"])
        if reasons == {None}:
            assert url in kept, url
    rep = report(out)
    read = stage(rep, "read")
    assert read["dropped"].get("truncated", 0) >= 1
    for s in rep["stages"]:
        assert s["docs_in"] == s["docs_out"] + sum(s["dropped"].values())
