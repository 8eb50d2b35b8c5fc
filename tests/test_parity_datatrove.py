"""Our heuristic stages keep and drop the same real documents as datatrove 0.10.1's filters.

Both run side by side on the same documents with the same thresholds (datatrove's defaults):
the 697 extracted CC-MAIN-2019-30 documents of ``text/`` and the documents resiliparse extracts
from the sample WARCs (via ``refine run``). A stage must agree on keep/drop for at least 99% of
them; on failure every disagreement is listed with both reasons and our signals. ``pytest -s``
prints the agreement rates. The c4 stage's bad-words rule is compared with datatrove's
``C4BadWordsFilter`` reading the shipped LDNOOBW lists (no download).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest
from support import FAST_STAGES, documents, require_shared_data, run_cli, write_config

pytest.importorskip("datatrove", reason="datatrove==0.10.1 (and spacy) not installed")
from datatrove.data import Document  # noqa: E402
from datatrove.pipeline.filters import (  # noqa: E402
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

from refine.filters.c4 import C4Quality  # noqa: E402
from refine.filters.fineweb import FineWebQuality  # noqa: E402
from refine.filters.gopher import GopherQuality, GopherRepetition  # noqa: E402

pytestmark = pytest.mark.integration

PAIRS = [
    (GopherRepetition, GopherRepetitionFilter),
    (GopherQuality, GopherQualityFilter),
    (C4Quality, C4QualityFilter),
    (FineWebQuality, FineWebQualityFilter),
]
MIN_AGREEMENT = 0.99


def _table(ids: list[str], texts: list[str]) -> pa.Table:
    return pa.table(
        {
            "id": ids,
            "url": [f"doc://{i}" for i in ids],
            "text": pa.array(texts, pa.large_string()),
            "source": ids,
        }
    )


@pytest.fixture(scope="module")
def cc_text() -> pa.Table:
    data = require_shared_data()
    path = data / "text" / "cc-main-2019-30-en.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return _table([r["id"] for r in rows], [r["text"] or "" for r in rows])


@pytest.fixture(scope="module")
def warc_docs(tmp_path_factory) -> pa.Table:
    data = require_shared_data()
    tmp: Path = tmp_path_factory.mktemp("warc_extract")
    out = tmp / "out"
    config = write_config(
        tmp / "extract.yaml", [str(data / "warc" / "*.warc.gz")], out, FAST_STAGES
    )
    proc = run_cli("run", str(config), "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = documents(out)
    return _table(table["id"].to_pylist(), [t or "" for t in table["text"].to_pylist()])


def _datatrove_reasons(dt_filter, table: pa.Table) -> list[str | None]:
    out = []
    for doc_id, text in zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True):
        result = dt_filter.filter(Document(text=text, id=doc_id))
        out.append(None if result is True else result[1])
    return out


def _compare(table: pa.Table, label: str) -> None:
    failures = []
    for ours_cls, theirs_cls in PAIRS:
        ours = ours_cls()
        log = ours.process(table).log
        got = log["reason"].to_pylist()
        want = _datatrove_reasons(theirs_cls(), table)
        differ = [
            i for i, (a, b) in enumerate(zip(got, want, strict=True)) if (a is None) != (b is None)
        ]
        same_reason = sum(a == b for a, b in zip(got, want, strict=True))
        rate = 1 - len(differ) / table.num_rows
        print(
            f"\n[{label}] {ours.name}: keep/drop agreement {rate:.2%} "
            f"({table.num_rows - len(differ)}/{table.num_rows}), same reason {same_reason}"
        )
        if rate < MIN_AGREEMENT:
            lines = [f"{ours.name} on {label}: agreement {rate:.2%} < {MIN_AGREEMENT:.0%}"]
            for i in differ:
                signals = {k: log[k][i].as_py() for k in ours.signal_names(table)}
                lines.append(
                    f"  {table['id'][i].as_py()}: refine={got[i]!r} datatrove={want[i]!r} "
                    f"signals={signals}"
                )
            failures.append("\n".join(lines))
    assert not failures, "\n".join(failures)


def test_parity_on_extracted_cc_text(cc_text):
    _compare(cc_text, "cc-main-2019-30-en.jsonl.gz")


def test_parity_on_extracted_warc_documents(warc_docs):
    assert warc_docs.num_rows > 300
    _compare(warc_docs, "warc/*.warc.gz via resiliparse")


def test_chained_filters_keep_the_same_documents(cc_text, warc_docs):
    """The 4 filters chained as each tool runs them (c4 rewrites the text the next one sees):
    the same documents survive. Speed is measured by scripts/bench_filters.py, not here."""
    table = pa.concat_tables([cc_text, warc_docs])
    chained = table
    for cls, _ in PAIRS:
        chained = cls().process(chained).table
    ours = set(chained["id"].to_pylist())
    filters = [theirs() for _, theirs in PAIRS]
    theirs = set()
    for doc_id, text in zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True):
        doc = Document(text=text, id=doc_id)
        if all(f.filter(doc) is True for f in filters):  # stops at the first drop
            theirs.add(doc_id)
    differ = sorted(ours ^ theirs)
    print(f"\nchain: refine kept {len(ours)}, datatrove {len(theirs)}, differ on {len(differ)}")
    assert ours and theirs
    assert len(differ) <= (1 - MIN_AGREEMENT) * table.num_rows, differ


@pytest.fixture
def datatrove_badwords_offline(monkeypatch, tmp_path):
    """datatrove's C4BadWordsFilter reads the shipped LDNOOBW lists instead of downloading them.

    The copies are lower-cased: datatrove compares entries as written with lower-cased text, so
    its capitalised entries (most of the Spanish list) never match; refine lower-cases them.
    """
    import datatrove.pipeline.filters.c4_filters as c4_filters

    from refine.filters.badwords import ASSETS

    def local_copy(url: str, **_) -> str:
        lang = url.rstrip("/").rsplit("/", 1)[-1]
        source = ASSETS / f"{lang}.txt"
        assert source.is_file(), f"no shipped list for {lang} ({url})"
        target = tmp_path / f"{lang}.txt"
        target.write_text(source.read_text(encoding="utf-8").lower(), encoding="utf-8")
        return str(target)

    monkeypatch.setattr(c4_filters, "cached_asset_path_or_download", local_copy)
    return c4_filters.C4BadWordsFilter


def test_c4_badwords_parity_on_real_documents(cc_text, warc_docs, datatrove_badwords_offline):
    """c4 with filter_badwords against datatrove's C4QualityFilter then C4BadWordsFilter, each
    document with the language our language ID gives it (en, de, es, fr, ja, zh... lists)."""
    from refine.filters.language import LanguageFilter

    table = pa.concat_tables([cc_text, warc_docs])
    table = table.append_column("language", LanguageFilter().score(table)["language"])
    stage = C4Quality(C4Quality.Params(filter_badwords=True))
    log = stage.process(table).log
    got = log["reason"].to_pylist()
    quality = C4QualityFilter()
    badwords = datatrove_badwords_offline(fail_on_missing_language=False)
    want = []
    columns = (table[c].to_pylist() for c in ("id", "text", "language"))
    for doc_id, text, lang in zip(*columns, strict=True):
        doc = Document(text=text, id=doc_id, metadata={"language": lang})
        result = quality.filter(doc)
        if result is True:  # the quality filter rewrote doc.text to its kept lines
            result = badwords.filter(doc)
        want.append(None if result is True else result[1])
    reason = "document_removed_with_badwords"
    ours_bad, theirs_bad = got.count(reason), want.count(reason)
    differ = [
        i for i, (a, b) in enumerate(zip(got, want, strict=True)) if (a is None) != (b is None)
    ]
    print(
        f"\nc4 + badwords: {table.num_rows - len(differ)}/{table.num_rows} agree; dropped for bad "
        f"words: refine {ours_bad}, datatrove {theirs_bad}"
    )
    assert theirs_bad >= 10  # the rule really fires on these documents
    detail = [
        f"{table['id'][i].as_py()} [{table['language'][i].as_py()}]: refine={got[i]!r} "
        f"datatrove={want[i]!r} c4_badwords={log['c4_badwords'][i].as_py()}"
        for i in differ
    ]
    assert len(differ) <= (1 - MIN_AGREEMENT) * table.num_rows, "\n".join(detail)
