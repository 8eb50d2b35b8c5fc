"""trafilatura's speedups are held to the versions CI tests, recorded in the run's report, and
give the same text under every extraction option refine exposes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import REPO, require_shared_data, run_cli, write_config

from refine.extract import trafilatura_speedups as ts
from refine.extract.engines import ExtractConfig, Extractor, check_engine, get_extractor
from refine.extract.stages import Extract, ReadParams, ReadWarc
from refine.pipeline.versions import library_version

ALL_CHANGES = list(ts.CHANGES)


def _run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: ``install()`` patches trafilatura in place."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------------- the version guard


def test_ci_installs_the_tested_versions():
    """The speedups are on in CI only if CI installs the versions they were verified against;
    a new trafilatura or lxml must be tested (and added to TESTED_VERSIONS) before it counts."""
    for name, tested in ts.TESTED_VERSIONS.items():
        assert library_version(name) in tested, (name, library_version(name), tested)
    assert ts.planned_status(True) == "on"


def test_an_untested_version_installs_nothing_and_warns_once():
    code = """
import logging, re, json
import trafilatura
from lxml import etree
from refine.extract import trafilatura_speedups as ts
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)
ts.LOGGER.addHandler(Keep())
trafilatura.__version__ = "2.99.0"  # what another installed trafilatura would say
first = ts.install()
second = ts.install()
from trafilatura import htmlprocessing, utils, xpaths
untouched = (
    all(type(x) is etree.XPath for x in xpaths.OVERALL_DISCARD_XPATH)
    and isinstance(utils.INVALID_XML_CHARS, re.Pattern)
    and not hasattr(htmlprocessing.tree_cleaning, "__wrapped_original__")
)
forced = ts.install(force=True)
print(json.dumps({
    "first": first.summary(), "second_is_first": second is first, "untouched": untouched,
    "warnings": [r.getMessage() for r in records if r.levelno >= logging.WARNING],
    "forced": forced.summary(),
    "patched_after_force": type(xpaths.OVERALL_DISCARD_XPATH[0]) is not etree.XPath,
}))
"""
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == {
        "trafilatura_speedups": "skipped_untested_version",
        "trafilatura_speedups_applied": [],
        "trafilatura_version": "2.99.0",
        "lxml_version": library_version("lxml"),
    }
    assert out["second_is_first"] and out["untouched"]
    assert len(out["warnings"]) == 1
    assert "trafilatura 2.99.0" in out["warnings"][0] and "force" in out["warnings"][0]
    assert out["forced"]["trafilatura_speedups"] == "forced"
    assert out["forced"]["trafilatura_speedups_applied"] == ALL_CHANGES
    assert out["patched_after_force"]


def test_the_tested_version_installs_all_five_changes():
    code = (
        "import json\n"
        "from refine.extract import trafilatura_speedups as ts\n"
        "print(json.dumps(ts.install().summary()))\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "trafilatura_speedups": "on",
        "trafilatura_speedups_applied": ALL_CHANGES,
        "trafilatura_version": library_version("trafilatura"),
        "lxml_version": library_version("lxml"),
    }


def test_speedups_force_is_a_valid_setting_and_others_are_not():
    assert ExtractConfig(speedups="force").speedups == "force"
    assert ExtractConfig(speedups=False).speedups is False
    with pytest.raises(ValueError):
        ExtractConfig(speedups="sometimes")


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_when_the_speedups_would_be_skipped_or_forced(monkeypatch, caplog):
    on = Extract(ExtractConfig())
    fingerprint = on.fingerprint()
    # a normal run keeps the fingerprint earlier versions wrote: no extra key
    assert "trafilatura_speedups" not in on.library_versions()
    assert "trafilatura_speedups" not in Extract(ExtractConfig(speedups=False)).library_versions()

    monkeypatch.setitem(ts.TESTED_VERSIONS, "trafilatura", ("0.0.1",))
    skipped = Extract(ExtractConfig())
    assert skipped.library_versions()["trafilatura_speedups"] == "skipped_untested_version"
    assert skipped.fingerprint() != fingerprint
    forced = Extract(ExtractConfig(speedups="force"))
    assert forced.library_versions()["trafilatura_speedups"] == "forced"
    assert len({fingerprint, skipped.fingerprint(), forced.fingerprint()}) == 3
    # the resiliparse engine has nothing to do with them
    assert (
        "trafilatura_speedups"
        not in Extract(ExtractConfig(engine="resiliparse")).library_versions()
    )

    with caplog.at_level(logging.WARNING, logger="refine.extract.engines"):
        check_engine(ExtractConfig())
    assert sum("trafilatura 0.0.1" in r.getMessage() for r in caplog.records) == 1


# --------------------------------------------------------------------------- the run's report


def test_an_untested_version_in_the_worker_reaches_the_stage_stats(tmp_path, monkeypatch):
    """Under a version the speedups were not tested with (faked, in the extraction child by a
    ``sitecustomize`` and here in the driver), the child runs trafilatura as shipped, the extract
    stage's stats say so, and the fingerprint says what the child did."""
    data = require_shared_data()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from refine.extract import trafilatura_speedups\n"
        "trafilatura_speedups.TESTED_VERSIONS['trafilatura'] = ('0.0.1',)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(site)]))
    monkeypatch.setitem(ts.TESTED_VERSIONS, "trafilatura", ("0.0.1",))
    read = ReadWarc(ReadParams(max_records_per_file=10))
    warc = data / "warc" / "cc-main-2020-34-sample.warc.gz"
    pages = read.read(read.plan(read.resolve_inputs([str(warc)]))[0]).table
    stage = Extract(ExtractConfig(timeout=37))  # its own extractor: a fresh child
    try:
        stats = stage.process(pages).stats
    finally:
        get_extractor(stage.params).close()
    assert stats.docs_out > 0
    assert stats.summary["trafilatura_speedups"] == "skipped_untested_version"
    assert stage.library_versions()["trafilatura_speedups"] == "skipped_untested_version"
    assert stats.summary["trafilatura_speedups_applied"] == []
    assert "trafilatura_speedups_parts" not in stats.counters


@pytest.mark.integration
def test_report_json_says_what_the_extraction_ran_with(tmp_path):
    data = require_shared_data()
    warc = data / "warc" / "cc-main-2020-34-sample.warc.gz"
    reports = {}
    for speedups in ("true", "false"):
        out = tmp_path / f"out-{speedups}"
        cfg = write_config(
            tmp_path / f"{speedups}.yaml",
            [str(warc)],
            out,
            f"  - read: {{max_records_per_file: 20}}\n  - extract: {{speedups: {speedups}}}\n",
        )
        proc = run_cli("run", str(cfg), "--workers", "1", "--no-progress", timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads((out / "report.json").read_text())
        reports[speedups] = next(s for s in report["stages"] if s["name"] == "extract")
    on, off = reports["true"], reports["false"]
    versions = {
        "trafilatura_version": library_version("trafilatura"),
        "lxml_version": library_version("lxml"),
    }
    assert on["summary"] == {
        "trafilatura_speedups": "on",
        "trafilatura_speedups_applied": ALL_CHANGES,
        **versions,
    }
    assert on["counters"]["trafilatura_speedups_parts"] == on["parts"] >= 1
    assert off["summary"] == {
        "trafilatura_speedups": "off",
        "trafilatura_speedups_applied": [],
        **versions,
    }
    assert "trafilatura_speedups_parts" not in off["counters"]
    assert on["docs_out"] == off["docs_out"] > 0


# --------------------------------------------------------------------------- option matrix

#: Each trafilatura option refine exposes toggled alone from refine's default (datatrove's:
#: favor_precision, tables, deduplicate), then a few combinations.
OPTION_MATRIX: list[dict] = [
    {},
    {"favor_precision": False},
    {"favor_precision": False, "favor_recall": True},  # with favor_precision, recall wins too
    {"include_comments": True},
    {"include_tables": False},
    {"deduplicate": False},
    {"fast": True},
    {"output_format": "markdown"},
    {
        "favor_precision": False,
        "favor_recall": True,
        "include_comments": True,
        "output_format": "markdown",
    },
    {"fast": True, "include_tables": False, "deduplicate": False, "favor_precision": False},
]
#: Every PAGE_STRIDE-th HTML page of the sample crawl (698 pages: 88 of them, from every file).
PAGE_STRIDE = 8


def _sample_pages() -> list[tuple[str, str | None]]:
    data = require_shared_data()
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_vs_datatrove import html_pages

    pages = list(html_pages(sorted((data / "warc").glob("*.warc.gz"))))
    assert len(pages) >= 600
    return pages[::PAGE_STRIDE]


def test_the_matrix_toggles_every_trafilatura_option():
    defaults = ExtractConfig().trafilatura_options()
    toggled = {k for row in OPTION_MATRIX for k, v in row.items() if v != defaults[k]}
    assert toggled == set(defaults), set(defaults) - toggled


@pytest.mark.integration
def test_same_text_with_and_without_speedups_under_every_option():
    """Each option set of the matrix, through the extraction child, with the speedups on and
    off: identical text (or the same drop reason) for every page. The two children of a pair run
    side by side."""
    pages = _sample_pages()
    jobs = [(i, speedups) for i in range(len(OPTION_MATRIX)) for speedups in (True, False)]
    cpu: dict[tuple[int, bool], float] = {}  # the children's CPU seconds extracting

    def run(job):
        i, speedups = job
        config = ExtractConfig(**OPTION_MATRIX[i], speedups=speedups, timeout=120)
        with Extractor(config) as extractor:
            results = extractor.extract_many(pages)
            cpu[job] = sum(r.cpu_seconds for r in results)
            return [(r.text, r.reason) for r in results], extractor.engine_facts

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(jobs, pool.map(run, jobs), strict=True))
    seconds = time.perf_counter() - t0
    differing = {}
    texts_by_option = []
    for i, options in enumerate(OPTION_MATRIX):
        (fast, fast_facts), (stock, stock_facts) = done[(i, True)], done[(i, False)]
        assert fast_facts["trafilatura_speedups"] == "on"
        assert fast_facts["trafilatura_speedups_applied"] == ALL_CHANGES
        assert stock_facts["trafilatura_speedups"] == "off"
        assert sum(t is not None for t, _ in stock) >= len(pages) // 2, options
        assert all(r in (None, "no_text") for _, r in stock), options  # no timeout, no error
        bad = [pages[k][1] for k, (a, b) in enumerate(zip(fast, stock, strict=True)) if a != b]
        if bad:
            differing[json.dumps(options)] = bad[:5]
        texts_by_option.append(tuple(t for t, _ in stock))
    assert differing == {}
    # the options change the output, so each row tests something of its own
    assert len(set(texts_by_option)) == len(OPTION_MATRIX)
    on = sum(v for (_, speedups), v in cpu.items() if speedups)
    off = sum(v for (_, speedups), v in cpu.items() if not speedups)
    print(
        f"{len(pages)} pages x {len(OPTION_MATRIX)} option sets x 2: {seconds:.1f} s wall, "
        f"extraction CPU {off:.1f} s stock, {on:.1f} s with the speedups"
    )
