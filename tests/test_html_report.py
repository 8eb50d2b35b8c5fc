"""`render_html`: the page a person opens after a run. Checked in a real browser (headless
Chromium): the funnel and the histograms are drawn, and every number printed equals report.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from dedup_corpus import corpus, real_docs, write_corpus
from support import FAST_STAGES, documents, report, require_shared_data, run_cli, write_config

from refine.errors import RefineError
from refine.inspect import CORE
from refine.report import render_html
from refine.report.plots import histogram
from refine.report.thresholds import thresholds_for

# -- fast: no browser, no crawl ---------------------------------------------------------------


def test_thresholds_come_from_the_run_config_with_defaults_filled_in():
    signals = ["gopher_word_count", "gopher_alpha_words_ratio", "gopher_stop_words"]
    marks = thresholds_for("gopher_quality", {"min_doc_words": 80}, signals)
    word = {t.param: (t.op, t.value) for t in marks["gopher_word_count"]}
    assert word == {"min_doc_words": ("<", 80.0), "max_doc_words": (">", 100000.0)}
    # named max_ but a minimum share of alphabetic words, as in datatrove
    (alpha,) = marks["gopher_alpha_words_ratio"]
    assert (alpha.param, alpha.op, alpha.value) == ("max_non_alpha_words_ratio", "<", 0.8)
    # 0 turns a gopher rule off: no line drawn for it
    assert "gopher_stop_words" not in thresholds_for(
        "gopher_quality", {"min_stop_words": 0}, signals
    )


def test_threshold_of_a_list_param_and_of_the_language_score():
    rep = thresholds_for(
        "gopher_repetition", {"top_n_grams": [[2, 0.25]]}, ["gopher_rep_top_2_gram_frac"]
    )
    assert [(t.param, t.value) for t in rep["gopher_rep_top_2_gram_frac"]] == [
        ("top_n_grams[2]", 0.25)
    ]
    (lang,) = thresholds_for("language", {"min_score": 0.5}, ["language_score"])["language_score"]
    assert (lang.op, lang.value) == ("<=", 0.5)


def test_histogram_stacks_kept_and_dropped_and_marks_the_threshold():
    values = np.array([10, 20, 30, 60, 70, 80, np.nan])
    kept = np.array([False, False, False, True, True, True, False])
    (t,) = [
        t
        for t in thresholds_for("gopher_quality", {}, ["gopher_word_count"])["gopher_word_count"]
        if t.param == "min_doc_words"
    ]
    h = histogram("gopher_word_count", values, kept, [t], True, "h")
    assert h.bins > 0
    assert len(re.findall(r'id="h-kept-\d+"', h.svg)) == h.bins
    assert len(re.findall(r'id="h-dropped-\d+"', h.svg)) == h.bins
    assert 'id="h-threshold-min_doc_words"' in h.svg
    assert any("without a value" in n for n in h.notes)


def test_a_folder_without_report_is_a_clear_error(tmp_path):
    with pytest.raises(RefineError, match="no report here"):
        render_html(tmp_path, tmp_path / "r.html")


def test_removed_lines_of_dedup_lines_are_a_table_escaped_and_cut(tmp_path):
    long_line = "menu " * 100  # 500 characters
    examples = [
        {"line": "<script>alert('x')</script> & more", "count": 41, "id": "<urn:uuid:a>"},
        {"line": long_line, "count": 7, "id": "b"},
    ]
    stage = {
        "folder": "01_dedup_lines",
        "name": "dedup_lines",
        "kind": "global",
        "docs_in": 10,
        "docs_out": 9,
        "keep_rate": 0.9,
        "bytes_in": 1000,
        "bytes_out": 500,
        "dropped": {"empty_after_line_dedup": 1},
        "counters": {"repeated_lines": 2, "lines_removed": 48, "docs_with_lines_removed": 9},
        "examples": examples,
    }
    (tmp_path / "report.json").write_text(json.dumps({"stages": [stage], "complete": True}))
    page = render_html(tmp_path, tmp_path / "r.html").read_text()
    dom = _Dom()
    dom.feed(page)
    f = stage["folder"]
    assert [_n(dom.fields[(f, f"removed_line_count_{i}")]) for i in range(2)] == [41, 7]
    assert _n(dom.fields[(f, "lines_removed")]) == 48
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;urn:uuid:a&gt;" in page
    assert long_line not in page and "[300 more characters]" in page


# -- real run, real browser --------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (apt-get install -y chromium)")


def _browser(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


class _Dom(HTMLParser):
    """Elements by id, the figures' data attributes, and the text of every data-field cell."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, tuple[str, dict]] = {}
        self.figures: dict[str, dict] = {}
        self.fields: dict[tuple[str | None, str], str] = {}
        self.reasons: dict[tuple[str, str], tuple[int, str]] = {}
        self.languages: dict[tuple[str, str], str] = {}
        self.paths: dict[str, list[str]] = {}
        self._open: list[tuple[str, dict]] = []
        self._text: list[str] = []
        self._groups: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = (tag, a)
        if tag == "figure" and "data-chart" in a:
            self.figures[a["data-chart"]] = a
        if tag == "g":
            self._groups.append(a.get("id"))
        if tag == "path" and self._groups and self._groups[-1]:
            self.paths.setdefault(self._groups[-1], []).append(a.get("d", ""))
        if "data-field" in a or "data-reason" in a or "data-lang" in a:
            self._open.append((tag, a))
            self._text = []

    def handle_endtag(self, tag):
        if tag == "g" and self._groups:
            self._groups.pop()
        if self._open and self._open[-1][0] == tag:
            _, a = self._open.pop()
            text = "".join(self._text).strip()
            if "data-field" in a:
                self.fields[(a.get("data-stage"), a["data-field"])] = text
            elif "data-reason" in a:
                self.reasons[(a["data-stage"], a["data-reason"])] = (int(a["data-value"]), text)
            else:
                self.languages[(a["data-lang"], a["data-when"])] = text

    def handle_data(self, data):
        if self._open:
            self._text.append(data)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, sample_models):
    data = require_shared_data()
    _chromium()
    tmp = tmp_path_factory.mktemp("html_report")
    out = tmp / "out"
    done = run_cli(
        "run",
        "configs/sample.yaml",
        "--output",
        str(out),
        "--no-progress",
        env={"REFINE_TEST_DATA": str(data), "REFINE_MODELS": str(sample_models)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = render_html(out, tmp / "report.html")
    dom = _browser(tmp, "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "<svg" in dom.stdout, dom.stderr[-2000:]
    parser = _Dom()
    parser.feed(dom.stdout)
    return out, page, parser, tmp


def _n(text: str) -> int:
    return int(text.replace(",", ""))


#: the page shows these with one decimal: off by at most half of it (1.45 shows as "1.4": the
#: float 1.45 is 1.4499999...), plus float slack
HALF_DIGIT = 0.05 + 1e-9


def test_stage_numbers_in_the_page_equal_report_json(rendered):
    out, _, dom, _ = rendered
    rep = report(out)
    for s in rep["stages"]:
        f = s["folder"]
        for key in ("docs_in", "docs_out", "parts"):
            assert _n(dom.fields[(f, key)]) == s[key], (f, key)
        assert _n(dom.fields[(f, "dropped_total")]) == sum(s["dropped"].values())
        keep = "-" if s["keep_rate"] is None else f"{100 * s['keep_rate']:.1f}%"
        assert dom.fields[(f, "keep_rate")] == keep
        for key in ("bytes_in", "bytes_out"):
            assert float(dom.fields[(f, key)].replace(",", "")) == pytest.approx(
                s[key] / 1e6, abs=HALF_DIGIT
            )
        assert float(dom.fields[(f, "seconds")].replace(",", "")) == pytest.approx(
            s["seconds"], abs=HALF_DIGIT
        )
        for reason, count in s["dropped"].items():
            value, text = dom.reasons[(f, reason)]
            assert value == count and text.startswith(f"{reason}: {count:,} (")
    assert {k for k in dom.reasons} == {
        (s["folder"], r) for s in rep["stages"] for r in s["dropped"]
    }
    assert _n(dom.fields[(None, "docs_first")]) == rep["stages"][0]["docs_in"]
    assert _n(dom.fields[(None, "docs_last")]) == rep["stages"][-1]["docs_out"]
    wall = float(dom.fields[(None, "wall_seconds")])
    assert wall == pytest.approx(rep["wall_seconds"], abs=HALF_DIGIT)


def _bars(dom: _Dom, prefix: str) -> list[str]:
    pattern = re.compile(re.escape(prefix) + r"\d+$")
    return [i for i in dom.ids if pattern.match(i)]


def _drawn(dom: _Dom, gid: str) -> bool:
    return any(d.strip() for d in dom.paths.get(gid, []))


def test_funnel_has_one_drawn_bar_per_stage(rendered):
    out, _, dom, _ = rendered
    stages = report(out)["stages"]
    docs = _bars(dom, "funnel-docs-bar-")
    assert len(docs) == len(stages)
    assert all(_drawn(dom, b) for b in docs)
    first_text = [s["name"] for s in stages].index("extract")
    assert len(_bars(dom, "funnel-bytes-bar-")) == len(stages) - first_text
    for s in stages:
        assert len(_bars(dom, f"drops-{s['folder']}-bar-")) == len(s["dropped"])


def test_every_numeric_signal_has_a_histogram_with_its_threshold(rendered):
    out, _, dom, _ = rendered
    drawn = 0
    for s in report(out)["stages"]:
        log = ds.dataset(out / "stages" / s["folder"], format="parquet")
        for field in log.schema:
            numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
            if field.name in CORE or not numeric:
                continue
            key = f"hist-{s['folder']}-{field.name}"
            assert key in dom.figures, key
            has_values = log.to_table(columns=[field.name]).column(0)
            has_values = pc.sum(pc.is_valid(has_values)).as_py() or 0
            bins = int(dom.figures[key]["data-bins"])
            if not has_values:
                assert bins == 0
                continue
            assert bins > 0
            kept, dropped = _bars(dom, f"{key}-kept-"), _bars(dom, f"{key}-dropped-")
            assert len(kept) == len(dropped) == bins, key
            assert any(_drawn(dom, b) for b in kept + dropped), key
            drawn += 1
    assert drawn >= 30  # 11-stage sample config: extract, filters, pii
    # the configured thresholds are drawn where the data is
    for gid in (
        "hist-05_gopher_quality-gopher_word_count-threshold-min_doc_words",
        "hist-03_language-language_score-threshold-min_score",
        "hist-06_c4-c4_num_sentences-threshold-min_num_sentences",
        "hist-07_fineweb-fineweb_line_punct_ratio-threshold-line_punct_thr",
    ):
        assert gid in dom.ids, gid


def test_languages_before_and_after_add_up_to_the_language_stage(rendered):
    out, _, dom, _ = rendered
    (lang,) = [s for s in report(out)["stages"] if s["name"] == "language"]
    before = sum(_n(v) for (_, when), v in dom.languages.items() if when == "before")
    after = sum(_n(v) for (_, when), v in dom.languages.items() if when == "after")
    # the table lists the top 30 languages: all of them on the sample
    assert before == lang["docs_in"]
    assert after == lang["docs_out"]
    assert _n(dom.languages[("en", "after")]) == lang["docs_out"]  # languages: [en]


def test_dedup_shows_clusters_and_a_removed_page_beside_its_survivor(rendered):
    out, page, dom, _ = rendered
    for s in report(out)["stages"]:
        if s["name"].startswith("dedup"):
            if "clusters" not in s["counters"]:
                continue
            clusters = s["counters"]["clusters"]
            assert _n(dom.fields[(s["folder"], "clusters")]) == clusters
            removed = ds.dataset(out / "stages" / s["folder"], format="parquet").to_table(
                columns=["duplicate_of"], filter=pc.field("duplicate_of").is_valid()
            )
            per_survivor = removed.group_by("duplicate_of").aggregate([([], "count_all")])
            assert per_survivor.num_rows == clusters
            sizes = set(per_survivor["count_all"].to_pylist())
            assert len(_bars(dom, f"clusters-{s['folder']}-bar-")) == len(sizes)
    html = page.read_text()
    (lines,) = [s for s in report(out)["stages"] if s["name"] == "dedup_lines"]
    shown = sorted(
        (int(field.rsplit("_", 1)[1]), _n(text))
        for (stage, field), text in dom.fields.items()
        if stage == lines["folder"] and field.startswith("removed_line_count_")
    )
    # the removed-lines table: one row per example of report.json, with its count
    assert [count for _, count in shown] == [e["count"] for e in lines["examples"]]
    assert [i for i, _ in shown] == list(range(len(lines["examples"])))
    if lines["counters"].get("lines_removed"):
        assert lines["examples"]  # the sample run removes lines: the table is not empty
        assert (
            _n(dom.fields[(lines["folder"], "lines_removed")]) == lines["counters"]["lines_removed"]
        )
    (url,) = [s for s in report(out)["stages"] if s["name"] == "dedup_url"]
    log = ds.dataset(out / "stages" / url["folder"], format="parquet").to_table(
        filter=pc.field("kept") == False  # noqa: E712
    )
    if log.num_rows:
        assert "kept (duplicate_of)" in html
        assert log["duplicate_of"][0].as_py().replace("<", "&lt;").replace(">", "&gt;") in html


def test_removed_lines_table_in_the_browser_equals_report_json(tmp_path):
    """A real run whose ``dedup_lines`` removes lines (the sample config's removes none): the
    page's table lists report.json's examples with their counts, and each count is the line's
    number of occurrences in the text that entered the stage, counted here."""
    data = require_shared_data()
    _chromium()
    docs = corpus(real_docs(data)[:150], 3)  # each short line 3 times, at least
    warc = write_corpus(tmp_path / "lines.warc.gz", docs)
    out = tmp_path / "out"
    min_chars, limit = 20, 2
    lines_params = f"{{max_occurrences: {limit}, min_chars: {min_chars}}}"
    stages = FAST_STAGES + f"  - dedup_lines: {lines_params}\n"
    cfg = write_config(tmp_path / "lines.yaml", [str(warc)], out, stages)
    done = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    (lines,) = [s for s in report(out)["stages"] if s["name"] == "dedup_lines"]
    examples = lines["examples"]
    assert examples and lines["counters"]["lines_removed"] > 0
    page = render_html(out, tmp_path / "report.html")
    dom_text = _browser(tmp_path, "--dump-dom", page.as_uri())
    assert dom_text.returncode == 0, dom_text.stderr[-2000:]
    dom = _Dom()
    dom.feed(dom_text.stdout)
    f = lines["folder"]
    shown = [_n(dom.fields[(f, f"removed_line_count_{i}")]) for i in range(len(examples))]
    assert shown == [e["count"] for e in examples]
    assert (f, f"removed_line_count_{len(examples)}") not in dom.fields
    assert _n(dom.fields[(f, "lines_removed")]) == lines["counters"]["lines_removed"]
    assert f'id="removed-lines-{f}"' in dom_text.stdout
    # ground truth: occurrences of each example line (whitespace and case folded) in the text
    # the stage read
    occurrences: dict[str, int] = {}
    for text in documents(out, "01_extract")["text"].to_pylist():
        for line in text.split("\n"):
            if len(line.strip()) >= min_chars:
                key = " ".join(line.split()).lower()
                occurrences[key] = occurrences.get(key, 0) + 1
    for e in examples:
        assert e["count"] > limit
        assert occurrences[" ".join(e["line"].split()).lower()] == e["count"], e


def test_page_is_self_contained_and_small(rendered):
    _, page, _, _ = rendered
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html
    assert page.stat().st_size < 5_000_000


def test_screenshot(rendered):
    _, page, _, tmp = rendered
    png = tmp / "report.png"
    shot = _browser(tmp, f"--screenshot={png}", "--window-size=1280,4000", page.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 50_000  # charts and tables, not a blank page
