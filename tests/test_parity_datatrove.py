"""Our heuristic stages keep and drop the same real documents as datatrove 0.10.1's filters.

Both run side by side on the same documents with the same thresholds (datatrove's defaults):
the 697 extracted CC-MAIN-2019-30 documents of ``text/`` and the documents resiliparse extracts
from the sample WARCs (via ``refine run``). A stage must agree on keep/drop for at least 99% of
them; on failure every disagreement is listed with both reasons and our signals. ``pytest -s``
prints the agreement rates and the chain's speed against datatrove's.
"""

from __future__ import annotations

import gzip
import json
import time
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


def test_chain_is_faster_than_datatrove(cc_text, warc_docs):
    """One process, the same ~1200 documents, the 4 filters chained as each tool runs them."""
    table = pa.concat_tables([cc_text, warc_docs])
    docs = list(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True))
    ours_best = theirs_best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        chained = table
        for cls, _ in PAIRS:
            chained = cls().process(chained).table
        ours_best = min(ours_best, time.perf_counter() - t0)
        filters = [theirs() for _, theirs in PAIRS]
        t0 = time.perf_counter()
        kept = 0
        for doc_id, text in docs:
            doc = Document(text=text, id=doc_id)
            if all(f.filter(doc) is True for f in filters):  # stops at the first drop
                kept += 1
        theirs_best = min(theirs_best, time.perf_counter() - t0)
    ratio = theirs_best / ours_best
    print(
        f"\n{len(docs)} documents: refine {len(docs) / ours_best:.0f} docs/s, "
        f"datatrove {len(docs) / theirs_best:.0f} docs/s, ratio {ratio:.1f}x "
        f"(kept {chained.num_rows} vs {kept})"
    )
    assert abs(chained.num_rows - kept) <= 0.01 * len(docs)
    assert ratio >= 3
