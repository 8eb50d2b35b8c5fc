"""perplexity: cc_net normalisation, scores equal to kenlm's own, ranking, thresholds, bad input.

The ranking test trains a real order-3 KenLM model with `refine.training.train_lm` (lmplz and
build_binary, from scripts/build_kenlm.sh) on the prose lines of the real CC sample, as cc_net
trains on Wikipedia; it skips when lmplz is not built. The other tests use a SentencePiece model
trained here and a bigram ARPA model written by the test itself, so they run without lmplz.
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from support import require_shared_data

from refine.errors import ConfigError
from refine.filters.perplexity import PerplexityFilter, normalize_line

kenlm = pytest.importorskip("kenlm")
sentencepiece = pytest.importorskip("sentencepiece")

SAMPLE = "text/cc-main-2019-30-en.jsonl.gz"
N_HELD_OUT = 60
BOILERPLATE = (
    "Home | About Us | Contact | Privacy Policy | Terms of Use | Sitemap\n"
    "Copyright © 2019 All Rights Reserved. Powered by WordPress\n"
    "Log in | Register | Forgot password? | Share on Facebook | Tweet | Pin it | Email"
)


# --- cc_net's text_normalizer.normalize, verbatim (the reference our fast version must equal) ---
_CC_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'",
    "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-",
}  # fmt: skip
_CC_NON_PRINTING = re.compile(f"[{''.join(map(chr, list(range(0, 32)) + list(range(127, 160))))}]")


def cc_net_normalize(line: str) -> str:
    line = line.strip()
    if not line:
        return line
    line = line.lower()
    nfd = unicodedata.normalize("NFD", line)
    line = "".join(c for c in nfd if unicodedata.category(c) != "Mn")
    line = re.sub(r"\d", "0", line)
    line = "".join(_CC_PUNCT.get(c, c) for c in line)
    return _CC_NON_PRINTING.sub("", line)


# --- real text ---------------------------------------------------------------------------------
def sample_docs() -> list[str]:
    path = require_shared_data() / SAMPLE
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [t for t in (json.loads(line).get("text") for line in f) if t]


def prose_lines(texts: list[str]) -> list[str]:
    """Lines that read as running prose: 12+ words, ending a sentence (our 'Wikipedia')."""
    return [
        line.strip()
        for t in texts
        for line in t.split("\n")
        if len(line.split()) >= 12 and line.strip()[-1:] in ".!?"
    ]


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    docs = sample_docs()
    held_out = prose_lines(docs[-N_HELD_OUT:])
    paragraphs = [p for p in held_out if 40 <= len(p.split()) <= 120]
    # the first plain one: no digits, markup or URLs (citations are not the point here)
    clean = next(p for p in paragraphs if not re.search(r"[\d<>|@/]", p))
    return {
        "train": "\n".join(prose_lines(docs[:-N_HELD_OUT])),
        "clean": clean,
        "shuffled": shuffle_words(clean),
        "boilerplate": BOILERPLATE,
        "held_out": paragraphs,
    }


def shuffle_words(text: str) -> str:
    words = text.split()
    random.Random(0).shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def sp_model(texts, tmp_path_factory) -> str:
    """A small SentencePiece model on the normalised training lines (no lmplz needed)."""
    folder = tmp_path_factory.mktemp("sp")
    lines = folder / "lines.txt"
    lines.write_text("\n".join(normalize_line(x) for x in texts["train"].split("\n")[:6000]))
    sentencepiece.SentencePieceTrainer.train(
        input=str(lines),
        model_prefix=str(folder / "sp"),
        vocab_size=1000,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return str(folder / "sp.model")


@pytest.fixture(scope="module")
def arpa_model(texts, sp_model, tmp_path_factory) -> str:
    """A bigram ARPA model written here from counts (KenLM needs order >= 2), no lmplz."""
    sp = sentencepiece.SentencePieceProcessor(model_file=sp_model)
    uni, bi = Counter(), Counter()
    for line in texts["train"].split("\n")[:3000]:
        toks = ["<s>", *sp.encode(normalize_line(line), out_type=str), "</s>"]
        uni.update(toks)
        bi.update(zip(toks, toks[1:], strict=False))
    total = sum(uni.values()) + len(uni) + 1
    top = bi.most_common(500)
    lines = ["\\data\\", f"ngram 1={len(uni) + 1}", f"ngram 2={len(top)}", "", "\\1-grams:"]
    lines.append(f"{math.log10(1 / total):.6f}\t<unk>\t0")
    for w, c in sorted(uni.items()):
        logp = -99.0 if w == "<s>" else math.log10((c + 1) / total)
        lines.append(f"{logp:.6f}\t{w}\t-0.3")
    lines += ["", "\\2-grams:"]
    lines += [f"{math.log10(c / uni[a]):.6f}\t{a} {b}" for (a, b), c in top]
    lines += ["", "\\end\\", ""]
    path = tmp_path_factory.mktemp("arpa") / "lm.arpa"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained_lm(texts, tmp_path_factory) -> tuple[str, str]:
    """A real order-3 KenLM model from train_lm (lmplz + build_binary)."""
    from refine.training import find_kenlm_tool, train_lm

    try:
        find_kenlm_tool("lmplz")
    except ConfigError as e:
        pytest.skip(f"KenLM's lmplz is not built (run scripts/build_kenlm.sh): {e}")
    folder = tmp_path_factory.mktemp("lm")
    corpus = folder / "corpus.txt"
    corpus.write_text(texts["train"], encoding="utf-8")
    out = train_lm([str(corpus)], 3, str(folder / "lm.binary"), vocab_size=8000, max_sp_lines=8000)
    assert out["order"] == 3 and out["tokens"] > 100_000
    return out["model"], out["sp_model"]


def docs(texts: list[str | None]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://x/{i}" for i in range(n)],
            "text": pa.array(texts, pa.large_string()),
            "source": [f"f#{i}" for i in range(n)],
        }
    )


def stage(model: str, sp: str, **params) -> PerplexityFilter:
    s = PerplexityFilter(PerplexityFilter.Params(model=model, sp_model=sp, **params))
    s.check()
    return s


def run(s: PerplexityFilter, texts: list[str | None]):
    res = s.process(docs(texts))
    res.stats.check_balance()
    return res


# --- normalisation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    [
        "  Hello, World!  ",
        "Café Ünïcödé naïve résumé — “quoted” «guillemets» …",
        "Prices: １２３ yen，４５６％ and 7,890 dollars in 2019; ٣ ४ ๕",
        "中华人民共和国。「北京」（首都）！？",
        "İstanbul ǅemal ß ﬁ Σίσυφος",
        "tab\there\x00\x07\x1b[0m\x85\x9f end",
        "\u0301\u0302",  # only combining marks
        "a\U000e0100b \U0001d167 x\u0301\U0001f642 ǆ Ⅻ ①②",  # astral marks, emoji, compatibility
        "",
        "   \t  ",
    ],
)
def test_normalize_equals_cc_net(line):
    assert normalize_line(line) == cc_net_normalize(line)


def test_normalize_equals_cc_net_on_real_lines():
    lines = [line for t in sample_docs()[:200] for line in t.split("\n")]
    assert len(lines) > 1000
    assert [normalize_line(x) for x in lines] == [cc_net_normalize(x) for x in lines]


# --- scores ------------------------------------------------------------------------------------
def cc_net_ppl(model: str, sp_model: str, text: str) -> tuple[float, list[float]]:
    """The document perplexity computed directly with kenlm and sentencepiece, as cc_net does."""
    lm = kenlm.Model(model)
    sp = sentencepiece.SentencePieceProcessor(model_file=sp_model)
    total_logp, total_len, per_line = 0.0, 0, []
    for line in text.split("\n"):
        line = cc_net_normalize(line)
        if not line:
            continue
        tokenized = " ".join(sp.encode_as_pieces(line))
        logp, length = lm.score(tokenized), len(tokenized.split()) + 1
        total_logp += logp
        total_len += length
        per_line.append(10.0 ** (-logp / length))
    return 10.0 ** (-total_logp / total_len), per_line


def test_ppl_equals_kenlm_directly(texts, sp_model, arpa_model):
    samples = [texts["clean"], texts["shuffled"], texts["boilerplate"], "Ünïcödé „x“ 2019\n\nok"]
    res = run(stage(arpa_model, sp_model, paragraph_ppl=True), samples)
    for text, got, paragraphs in zip(
        samples, res.log["ppl"].to_pylist(), res.log["ppl_paragraphs"].to_pylist(), strict=True
    ):
        want, want_lines = cc_net_ppl(arpa_model, sp_model, text)
        assert got == pytest.approx(want, rel=1e-12)
        assert paragraphs == pytest.approx(want_lines, rel=1e-6)  # float32 per paragraph
    assert res.log.schema.field("ppl").type == pa.float64()
    assert res.table.column_names[-2:] == ["ppl", "ppl_paragraphs"]


def test_ranks_clean_over_shuffled_over_boilerplate(texts, trained_lm):
    model, sp = trained_lm
    order = ["clean", "shuffled", "boilerplate"]
    scores = run(stage(model, sp), [texts[k] for k in order]).log["ppl"].to_pylist()
    ppl = dict(zip(order, scores, strict=True))
    assert sorted(ppl, key=ppl.get) == ["clean", "shuffled", "boilerplate"], ppl
    assert ppl["shuffled"] > 2 * ppl["clean"], ppl
    # and not only for that paragraph: over all 100+ held-out paragraphs
    held_out = texts["held_out"]
    assert len(held_out) > 100
    s = stage(model, sp)
    clean = s.process(docs(held_out)).log["ppl"].to_pylist()
    junk = s.process(docs([shuffle_words(p) for p in held_out])).log["ppl"].to_pylist()
    assert sum(c < j for c, j in zip(clean, junk, strict=True)) >= 0.9 * len(held_out)
    assert sum(c < ppl["boilerplate"] for c in clean) >= 0.9 * len(held_out)
    # the same numbers as kenlm on the trained binary, computed the cc_net way
    for k in order:
        assert ppl[k] == pytest.approx(cc_net_ppl(model, sp, texts[k])[0], rel=1e-12)


def test_hostile_documents_never_raise(sp_model, arpa_model):
    hostile = [
        "",
        None,
        "\n\n   \n\x00\x01\x7f",
        "x" * 10_000_000,  # one 10 MB line
        "word " * 200_000,
        "中华人民共和国是一个位于东亚的国家，首都是北京。\n東京は日本の首都です。",
        "🙂" * 1000 + " <s> </s> <unk>",  # KenLM's reserved words as text
    ]
    res = run(stage(arpa_model, sp_model, max_ppl=1e9, paragraph_ppl=True), hostile)
    ppl = res.log["ppl"].to_pylist()
    assert ppl[:3] == [None, None, None]  # nothing to score: null, kept
    assert all(p is not None and math.isfinite(p) and p >= 1 for p in ppl[3:])
    assert res.log["kept"].to_pylist() == [True] * len(hostile)


# --- decisions ---------------------------------------------------------------------------------
def test_max_ppl_and_retune_reuses_signals(texts, sp_model, arpa_model):
    samples = [texts["clean"], texts["shuffled"], texts["boilerplate"], ""]
    first = run(stage(arpa_model, sp_model), samples)
    ppl = first.log["ppl"].to_pylist()
    assert first.log["kept"].to_pylist() == [True] * 4  # no threshold: scores only
    cut = sorted(ppl[:3])[1]  # keeps the lowest, the median is not above itself
    tuned = stage(arpa_model, sp_model, max_ppl=cut)
    assert tuned.score_fingerprint() == stage(arpa_model, sp_model).score_fingerprint()
    res = tuned.process(docs(samples), previous=first.log)
    assert res.stats.counters["signals_reused"] == 4
    reasons = res.log["reason"].to_pylist()
    assert [r is None for r in reasons] == [p is None or p <= cut for p in ppl]
    assert set(reasons) - {None} == {"ppl_too_high"}


def test_buckets_by_language_cutoffs(texts, sp_model, arpa_model, tmp_path):
    samples = [texts["clean"], texts["shuffled"], texts["boilerplate"]]
    ppl = run(stage(arpa_model, sp_model), samples).log["ppl"].to_pylist()
    lo, mid, hi = sorted(ppl)
    cutoffs = {"en": ((lo + mid) / 2, (mid + hi) / 2)}
    table = docs(samples).append_column("language", pa.array(["en", "en", "de"]))
    s = stage(arpa_model, sp_model, keep_buckets=["head"], cutoffs=cutoffs)
    res = s.process(table)
    want = {lo: None, mid: "ppl_middle", hi: "ppl_tail"}
    assert res.log["reason"].to_pylist()[:2] == [want[p] for p in ppl[:2]]
    assert res.log["reason"][2].as_py() is None  # no cutoffs for de: bucket "all", kept
    # the same cutoffs from a cc_net cutoff.csv (percentile rows, language columns)
    csv = tmp_path / "cutoff.csv"
    rows = [",en"] + [
        f"{p},{cutoffs['en'][0] if p <= 30 else cutoffs['en'][1]}" for p in range(101)
    ]
    csv.write_text("\n".join(rows) + "\n")
    s2 = stage(arpa_model, sp_model, keep_buckets=["head"], cutoff_csv=str(csv))
    assert s2.process(table).log["reason"].to_pylist() == res.log["reason"].to_pylist()


def test_bad_params_are_config_errors(sp_model, arpa_model, tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "nope.binary")):
        stage(str(tmp_path / "nope.binary"), sp_model)
    with pytest.raises(ConfigError, match=str(tmp_path / "nope.model")):
        stage(arpa_model, str(tmp_path / "nope.model"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError, match="not a KenLM"):
        stage(str(junk), sp_model)
    with pytest.raises(ConfigError, match="not a SentencePiece"):
        stage(arpa_model, str(junk))
    with pytest.raises(ValueError, match="keep_buckets needs cutoffs"):
        PerplexityFilter.Params(model=arpa_model, sp_model=sp_model, keep_buckets=["head"])
    with pytest.raises(ConfigError, match="cutoff_csv"):
        stage(arpa_model, sp_model, keep_buckets=["head"], cutoff_csv=str(tmp_path / "x.csv"))


def test_train_lm_without_lmplz_says_how_to_build_it(monkeypatch, tmp_path):
    import sys

    from refine.training import train_lm

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REFINE_KENLM_BIN", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(ConfigError, match="scripts/build_kenlm.sh"):
        train_lm([str(tmp_path / "corpus.txt")], 3, str(tmp_path / "lm.binary"))


def test_models_are_not_pickled_into_the_graph(texts, sp_model, arpa_model):
    s = stage(arpa_model, sp_model)
    run(s, [texts["clean"]])  # loads both models in this process
    assert len(pickle.dumps(s)) < 4096
    assert Path(arpa_model).stat().st_size > 4096
