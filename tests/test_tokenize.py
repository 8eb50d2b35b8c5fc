"""tokenize: shards that Megatron, nanoGPT-style loaders and pyarrow read back as our documents.

Real text: the 697 extracted Common Crawl documents of ``shared/data/text`` (dolma test data),
split into a varying number of parts to stand for different partitionings.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from support import require_shared_data

from refine.errors import ConfigError
from refine.pipeline.stage import GlobalContext
from refine.pipeline.storage import list_parts, write_parquet_atomic
from refine.tokenize import verify
from refine.tokenize.shuffle import Shuffle
from refine.tokenize.stage import Tokenize, TokenizeParams, tokenize_table
from refine.tokenize.tokenizer import (
    GPT2_SPEC,
    describe,
    encode_documents,
    load_tokenizer,
    train_tokenizer,
)
from refine.tokenize.writers import (
    FORMATS,
    file_facts,
    read_megatron_index,
    read_shard_tokens,
    write_hashed,
    write_shard,
)

ODD_TEXTS = [
    "Hello world",
    "naïve café — 日本語のテキスト 🙂\n\ttabs  and  spaces ",
    "a literal <|endoftext|> inside a forum post",
    "\u200b zero width, \r\n CRLF, ﬁ ligature, é vs e\u0301",
]


# -- unit ------------------------------------------------------------------------------------
def test_gpt2_offline_ids_and_eos():
    info = describe(GPT2_SPEC)
    assert (info.vocab_size, info.eos_id, info.bos_id) == (50257, 50256, None)
    assert info.token_dtype == np.uint16 and info.megatron_dtype == np.uint16
    tok = load_tokenizer(GPT2_SPEC)
    flat, offsets = encode_documents(tok, ODD_TEXTS, info)
    assert flat[: offsets[1]].tolist() == [15496, 995, 50256]  # as GPT-2
    for i, text in enumerate(ODD_TEXTS):
        doc = flat[offsets[i] : offsets[i + 1]].tolist()
        assert doc[-1] == 50256 and 50256 not in doc[:-1]  # a literal <|endoftext|> is text
        assert tok.decode(doc[:-1]) == text  # byte-level BPE is lossless


def test_untrained_gpt2_bytes():
    """Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5-0xFF) are GPT-2's untrained ids."""
    info = describe(GPT2_SPEC)
    assert len(info.untrained_ids) == 13 and 124 in info.untrained_ids  # 0xC0


def _bos_tokenizer(tmp_path: Path, pad_is_eos: bool = False) -> Path:
    """A small byte-level BPE whose post-processor adds <s> (like Llama's)."""
    from tokenizers import Tokenizer, processors

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 200)
    path = train_tokenizer([corpus], 300, tmp_path / "plain.json")
    tok = Tokenizer.from_file(str(path))
    tok.add_special_tokens(["<s>"])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    if pad_is_eos:
        tok.enable_padding(pad_id=tok.token_to_id("<|endoftext|>"), pad_token="<|endoftext|>")
    out = tmp_path / ("pad.json" if pad_is_eos else "bos.json")
    tok.save(str(out))
    return out


def test_bos_once_when_post_processor_adds_it(tmp_path):
    spec = str(_bos_tokenizer(tmp_path))
    info = describe(spec)
    tok = load_tokenizer(spec)
    bos = tok.token_to_id("<s>")
    assert info.bos_id == bos
    flat, offsets = encode_documents(tok, ["the cat", "sat on the mat"], info)
    for i in range(2):
        doc = flat[offsets[i] : offsets[i + 1]].tolist()
        assert doc[0] == bos and doc[1] != bos and doc.count(bos) == 1
        assert doc[-1] == info.eos_id
    assert describe(spec, bos="never").bos_id is None
    assert describe(GPT2_SPEC, bos="auto").bos_id is None  # GPT-2 adds none


def test_check_fails_at_build_time(tmp_path):
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(ConfigError, match=str(missing)):
        Tokenize(TokenizeParams(tokenizer=str(missing))).check()
    with pytest.raises(ConfigError, match="padding token is the EOS"):
        Tokenize(TokenizeParams(tokenizer=str(_bos_tokenizer(tmp_path, True)))).check()
    with pytest.raises(ConfigError, match="not in the tokenizer's vocabulary"):
        Tokenize(TokenizeParams(eos_token="<nope>")).check()


def test_unknown_hub_id_fails_at_build_time():
    """A hub id that cannot be resolved (offline here) is a ConfigError naming it."""
    import subprocess
    import sys

    code = (
        "from refine.errors import ConfigError\n"
        "from refine.tokenize.stage import Tokenize, TokenizeParams\n"
        "try:\n"
        "    Tokenize(TokenizeParams(tokenizer='hf://nobody/no-such-tokenizer')).check()\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert "nobody/no-such-tokenizer" in r.stdout, r.stderr[-2000:]


def test_train_tokenizer_and_untrained_tokens(tmp_path):
    corpus = tmp_path / "en.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. " * 300)
    path = train_tokenizer([corpus], 400, tmp_path / "tok.json")
    info = describe(str(path))
    assert info.eos_id == load_tokenizer(str(path)).token_to_id("<|endoftext|>")
    assert 0 < len(info.untrained_ids) < info.vocab_size
    tok = load_tokenizer(str(path))
    table = pa.table({"id": ["a", "b"], "source": ["x", "y"], "text": ["The lazy dog.", "日本"]})
    res = tokenize_table(table, tok, info)
    assert res.untrained.tolist()[0] == 0 and res.untrained.tolist()[1] > 0  # unseen bytes
    assert tok.decode(res.input_ids(1)[:-1]) == "日本"


def test_untrained_counts_per_document(tmp_path):
    """Per-document counts of untrained ids, against a plain Python count of each document's
    ids; documents without text are dropped, whatever column they lack."""
    corpus = tmp_path / "en.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. " * 300)
    path = train_tokenizer([corpus], 400, tmp_path / "tok.json")
    info = describe(str(path))
    tok = load_tokenizer(str(path))
    texts = ["The lazy dog.", "日本 and ü", None, "", "fox ✓✓ dog", "Ω" * 7]
    table = pa.table({"id": [str(i) for i in range(6)], "text": texts})
    res = tokenize_table(table, tok, info, batch_docs=2)
    assert res.has_text.to_pylist() == [True, True, False, False, True, True]
    assert res.meta["id"].to_pylist() == ["0", "1", "4", "5"]
    assert res.meta["source"].null_count == 4  # no source column: nulls, not an error
    bad = set(info.untrained_ids)
    expected = [sum(i in bad for i in res.input_ids(k)) for k in range(4)]
    assert res.untrained.tolist() == expected and expected[0] == 0 and min(expected[1:]) > 0
    empty = tokenize_table(pa.table({"id": ["a"], "text": [""]}), tok, info)
    assert empty.meta.num_rows == 0 and len(empty.tokens) == 0 and empty.offsets.tolist() == [0]


def _shard_input(n_docs: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 50, n_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.integers(0, vocab, int(offsets[-1])).astype(np.uint32)
    ids = pa.array([f"d{i}" for i in range(n_docs)])
    return tokens, offsets, ids


@pytest.mark.parametrize("vocab", [50257, 100_000])  # uint16 files; int32/uint32 files
def test_shard_files_are_hashed_as_written(tmp_path, vocab):
    """The manifest facts computed while writing are the files' real size and sha256, every
    format reads back the same tokens, and no temporary file is left behind."""
    from dataclasses import replace

    info = replace(describe(GPT2_SPEC), vocab_size=vocab)
    tokens, offsets, ids = _shard_input(300, vocab)
    entry = write_shard(tmp_path, 3, list(FORMATS), tokens, offsets, ids, ids, info)
    assert entry["name"] == "shard-00003"
    assert (entry["documents"], entry["tokens"]) == (300, len(tokens))
    on_disk = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file())
    assert on_disk == sorted(entry["files"])  # nothing else (no .tmp-*)
    for rel, facts in entry["files"].items():
        assert facts == file_facts(tmp_path / rel), rel
    width = {50257: 2, 100_000: 4}[vocab]
    for fmt in ("megatron", "flat"):
        assert entry["files"][f"{fmt}/shard-00003.bin"]["bytes"] == width * len(tokens)
    for fmt in FORMATS:
        got, got_offsets = read_shard_tokens(tmp_path, fmt, "shard-00003", info.token_dtype)
        assert np.array_equal(got, tokens) and np.array_equal(got_offsets, offsets), fmt
    try:  # Megatron's own reader too, when it is installed (the int32 case is only here)
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    except ImportError:
        return
    ds = IndexedDataset(str(tmp_path / "megatron" / "shard-00003"))
    assert len(ds) == 300 and ds[299].tolist() == tokens[offsets[299] :].tolist()
    assert np.array_equal(np.concatenate([ds[i] for i in range(300)]), tokens)


def test_failed_write_leaves_nothing(tmp_path):
    def half_then_fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_hashed(tmp_path / "x.bin", half_then_fail)
    assert list(tmp_path.iterdir()) == []


# -- integration -------------------------------------------------------------------------------
def real_documents() -> pa.Table:
    data = require_shared_data()
    rows = []
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt") as f:
        for i, line in enumerate(f):
            d = json.loads(line)
            rows.append({"id": str(d["id"]), "source": f"jsonl#{i}", "text": d["text"]})
    rows.append({"id": "empty-doc", "source": "jsonl#-1", "text": ""})
    return pa.Table.from_pylist(rows).cast(
        pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.large_string())])
    )


def write_parts(table: pa.Table, folder: Path, n_parts: int) -> None:
    bounds = np.linspace(0, table.num_rows, n_parts + 1).astype(int)
    for k in range(n_parts):
        chunk = table.slice(bounds[k], bounds[k + 1] - bounds[k])
        write_parquet_atomic(chunk, folder / f"part-{k:05d}.parquet")


def run_global(stage, out: Path, src: str, dst: str, client) -> object:
    ctx = GlobalContext(
        input_dir=str(out / "documents" / src),
        output_dir=str(out / "documents" / dst),
        log_dir=str(out / "stages" / dst),
        work_dir=str(out / "_state" / "work" / dst),
        client=client,
    )
    return stage.run(ctx)


def pipeline(table, out: Path, n_parts: int, workers: int, **tok_params):
    write_parts(table, out / "documents" / "01_docs", n_parts)
    with Client(
        processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
    ) as c:
        sh = run_global(
            Shuffle(Shuffle.Params(seed=3, docs_per_part=100)), out, "01_docs", "02_shuffle", c
        )
        tk = run_global(Tokenize(TokenizeParams(**tok_params)), out, "02_shuffle", "03_tokenize", c)
    return sh, tk


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    table = real_documents()
    out = tmp_path_factory.mktemp("tok") / "out"
    sh, tk = pipeline(table, out, 3, 2, shard_tokens=200_000)
    return table, out, tk


def manifest(out: Path) -> dict:
    return json.loads((out / "tokens" / "manifest.json").read_text())


def docs_by_id(table: pa.Table) -> dict[str, str]:
    return dict(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True))


def test_counts_agree_in_stats_manifest_and_files(real_run):
    table, out, stats = real_run
    m = manifest(out)
    empty = sum(1 for t in table["text"].to_pylist() if not t)  # 27 in the sample + ours
    assert stats.docs_in == table.num_rows and stats.dropped == {"no_text": empty}
    assert stats.docs_out == m["documents"] == table.num_rows - empty
    assert stats.counters["tokens"] == m["tokens"] == sum(s["tokens"] for s in m["shards"])
    assert stats.counters["tokens"] == stats.counters["text_tokens"] + m["documents"]  # + EOS
    assert stats.counters["shards"] == len(m["shards"]) > 1
    for s in m["shards"]:
        flat = np.memmap(out / "tokens" / "flat" / f"{s['name']}.bin", dtype=np.uint16, mode="r")
        assert len(flat) == s["tokens"]
        for rel, facts in s["files"].items():
            assert (out / "tokens" / rel).stat().st_size == facts["bytes"]
    assert m["dtype"] == {"parquet": "uint32", "megatron": "uint16", "flat": "uint16"}
    assert m["tokenizer"]["eos_id"] == 50256 and m["tokenizer"]["bos_id"] is None
    log = pq.read_table(out / "stages" / "03_tokenize")
    assert sum(log["num_tokens"].to_pylist()) == m["tokens"]
    index = pq.read_table(out / "tokens" / "docs")  # lineage: id, source, offset, num_tokens
    assert index.num_rows == m["documents"] and sum(index["num_tokens"].to_pylist()) == m["tokens"]


def test_every_format_decodes_to_the_documents(real_run):
    """pyarrow (Parquet), numpy.memmap (flat, as nanoGPT) and our .idx parser all give each
    document's tokens, and decoding them gives back its text exactly."""
    table, out, _ = real_run
    texts = docs_by_id(table)
    tok = load_tokenizer(GPT2_SPEC)
    m = manifest(out)
    seen = []
    for s in m["shards"]:
        name = s["name"]
        pt = pq.read_table(out / "tokens" / "parquet" / f"{name}.parquet")
        assert pt.schema.field("input_ids").type == pa.list_(pa.uint32())
        flat = np.memmap(out / "tokens" / "flat" / f"{name}.bin", dtype=np.uint16, mode="r")
        offs = np.fromfile(out / "tokens" / "flat" / f"{name}.offsets.bin", dtype="<i8")
        dtype, lengths, pointers, doc_idx = read_megatron_index(
            out / "tokens" / "megatron" / f"{name}.idx"
        )
        mega = np.fromfile(out / "tokens" / "megatron" / f"{name}.bin", dtype=dtype)
        assert doc_idx.tolist() == list(range(pt.num_rows + 1))
        for i, (doc_id, ids) in enumerate(
            zip(pt["id"].to_pylist(), pt["input_ids"].to_pylist(), strict=True)
        ):
            assert flat[offs[i] : offs[i + 1]].tolist() == ids
            start = pointers[i] // dtype.itemsize
            assert mega[start : start + lengths[i]].tolist() == ids
            assert ids[-1] == 50256
            assert tok.decode(ids[:-1]) == texts[doc_id]
            seen.append(doc_id)
    assert sorted(seen) == sorted(k for k, v in texts.items() if v)


def test_megatron_reads_our_shards(real_run):
    pytest.importorskip("torch", reason="megatron-core needs torch (pip install torch==2.13.0)")
    try:
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    except ImportError as e:
        pytest.skip(f"megatron-core is not importable ({e}); pip install megatron-core==0.16.1")
    table, out, _ = real_run
    for s in manifest(out)["shards"]:
        pt = pq.read_table(out / "tokens" / "parquet" / f"{s['name']}.parquet")
        ds = IndexedDataset(str(out / "tokens" / "megatron" / s["name"]))
        assert len(ds) == pt.num_rows == s["documents"]
        assert ds.document_indices.tolist() == list(range(pt.num_rows + 1))
        for i, ids in enumerate(pt["input_ids"].to_pylist()):
            assert ds[i].tolist() == ids
        assert int(ds.sequence_lengths.sum()) == s["tokens"]


def test_verify_passes_then_catches_damage(real_run, tmp_path):
    table, out, _ = real_run
    rep = verify(out, sample=-1)
    assert rep.ok, rep.problems
    assert (
        rep.sampled == sum(1 for t in table["text"].to_pylist() if t)
        and rep.tokens == manifest(out)["tokens"]
    )
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    m = manifest(copy)
    victim = copy / "tokens" / "flat" / f"{m['shards'][0]['name']}.bin"
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    rep = verify(copy, sample=10)
    assert not rep.ok
    assert any("sha256" in p for p in rep.problems) and any("differ" in p for p in rep.problems)


def test_shards_byte_identical_across_partitions_and_workers(tmp_path):
    table = real_documents()
    digests = []
    for n_parts, workers in [(1, 1), (4, 2), (7, 4)]:
        out = tmp_path / f"out-{n_parts}-{workers}"
        pipeline(table, out, n_parts, workers, shard_tokens=150_000)
        m = manifest(out)
        digests.append([(s["name"], s["files"]) for s in m["shards"]])
        assert len(list_parts(out / "documents" / "03_tokenize")) == len(
            list_parts(out / "documents" / "02_shuffle")
        )
    assert digests[0] == digests[1] == digests[2]
    assert len(digests[0]) > 2


def test_end_to_end_with_the_runner(tmp_path, monkeypatch):
    """read -> extract -> shuffle -> tokenize through Runner, stats in report.json."""
    from test_tokenize_shuffle import corpus, run

    from refine.pipeline import registry

    monkeypatch.setitem(registry.STAGES, "shuffle", "refine.tokenize.shuffle:Shuffle")
    monkeypatch.setitem(registry.STAGES, "tokenize", "refine.tokenize.stage:Tokenize")
    warc = tmp_path / "a.warc.gz"
    corpus(warc, n=30)
    out = tmp_path / "out"
    tok = {"shard_tokens": 300, "formats": ["megatron", "flat"]}
    stages = [{"shuffle": {"seed": 1, "docs_per_part": 8}}, {"tokenize": tok}]
    summary = run(warc, out, 0.001, 2, stages)
    tok = summary.report["stages"][3]
    assert tok["name"] == "tokenize" and tok["docs_out"] == 30
    assert tok["counters"]["tokens"] == manifest(out)["tokens"] > 0
    rep = verify(out, sample=-1)
    assert rep.ok and rep.sampled == 30, rep.problems  # without Parquet shards too
    assert not (out / "tokens" / "parquet").exists()
    # a re-run resumes: nothing recomputed, same shards
    before = manifest(out)
    summary = run(warc, out, 0.001, 2, stages)
    assert summary.parts_skipped == summary.parts_total
    assert manifest(out) == before


def test_shard_planning_finds_overlapping_parts_by_bisection():
    """``_overlap`` (bisection: planning linear in shards + parts) equals the scan over every
    part, at shard sizes smaller and larger than the parts."""
    import random

    from refine.tokenize.stage import _overlap

    rng = random.Random(5)
    sizes = [rng.randint(1, 500) for _ in range(300)]
    starts = [0]
    for s in sizes:
        starts.append(starts[-1] + s)
    parts = [f"t{j}" for j in range(len(sizes))]
    for size in (7, 100, 499, 10_000, starts[-1] + 1):
        for w in range(-(-starts[-1] // size)):
            lo, hi = w * size, (w + 1) * size
            scan = [(parts[j], starts[j]) for j in range(len(parts))
                    if starts[j] < hi and starts[j + 1] > lo]  # fmt: skip
            assert _overlap(parts, starts, lo, hi) == scan
