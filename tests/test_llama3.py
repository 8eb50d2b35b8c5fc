"""llama3_heuristics: duplicated n-gram coverage, dirty words, token KL against a reference."""

from __future__ import annotations

import gzip
import json
import pickle
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import FAST_STAGES, documents, require_shared_data, run_cli, write_config

from refine.errors import ConfigError
from refine.filters.c4 import C4Quality
from refine.filters.fineweb import FineWebQuality
from refine.filters.gopher import GopherQuality, GopherRepetition
from refine.filters.language import LanguageFilter
from refine.filters.llama3 import Llama3Heuristics, dup_ngram_coverage
from refine.filters.reference import build_reference, load_reference
from refine.filters.words import split_texts

PROSE = (
    "The cat sat on the mat and looked at the garden with great interest. "
    "It was a sunny day, and the birds were singing in the old oak tree. "
    "Nobody knew that the cat had been waiting there for hours to see them. "
    "Later that evening, the family came home and found it asleep by the door. "
    "They have always said that the cat is the true owner of the house. "
)


def docs(*texts: str | None, language: list | None = None) -> pa.Table:
    n = len(texts)
    cols = {
        "id": [f"d{i}" for i in range(n)],
        "url": [f"http://x/{i}" for i in range(n)],
        "text": pa.array(texts, pa.large_string()),
        "source": [f"f#{i}" for i in range(n)],
    }
    if language is not None:
        cols["language"] = pa.array(language, pa.string())
    return pa.table(cols)


def stage(**params) -> Llama3Heuristics:
    s = Llama3Heuristics(Llama3Heuristics.Params(**params))
    s.check()
    return s


def run(s: Llama3Heuristics, table: pa.Table):
    res = s.process(table)
    res.stats.check_balance()
    return res.log


def log_lines(n: int = 200) -> str:
    rnd = random.Random(1)
    return "\n".join(
        f"2024-05-01 10:{i // 60:02d}:{i % 60:02d},{rnd.randrange(1000):03d} ERROR "
        f"[worker-{rnd.randrange(8)}] org.example.db.Pool - Connection refused: connect "
        f"to db-{rnd.randrange(3)}.internal:5432 after 3 retries"
        for i in range(n)
    )


def random_tokens(n: int = 400, seed: int = 2) -> str:
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    return " ".join(
        "".join(rnd.choice(letters) for _ in range(rnd.randint(3, 9))) for _ in range(n)
    )


def adult_page() -> str:
    """Prose words with dirty words strewn among them, shuffled (so not repetitive)."""
    rnd = random.Random(3)
    tokens = PROSE.split() * 3 + ["sex", "porn", "nude", "pussy", "xxx", "anal", "milf"] * 4
    rnd.shuffle(tokens)
    return " ".join(tokens)


@pytest.fixture(scope="module")
def english_reference(tmp_path_factory) -> str:
    """A reference from PROSE-like English, for the tiny-table tests."""
    path = tmp_path_factory.mktemp("ref") / "ref.json"
    build_reference([PROSE] * 20 + [PROSE.upper(), "A dog. The dog runs."], path, top_k=1000)
    return str(path)


# --- the three rules at the threshold edge -------------------------------------------------


def test_dup_ngram_coverage_values():
    words = split_texts(["a b c a b c", "a b c d e f", "x y z w x y z w q", "", "a b"])
    cov = dup_ngram_coverage(words, 3)
    assert cov[0] == 1.0  # "a b c" twice covers every word
    assert cov[1] == 0.0
    assert cov[2] == pytest.approx(8 / 9)  # "x y z" and "y z w" repeat; "q" is not covered
    assert np.isnan(cov[3])  # no words: no coverage
    assert cov[4] == 0.0  # fewer words than n


@pytest.mark.parametrize(
    ("column", "param", "reason", "text"),
    [
        ("llama3_dup_ngram_coverage", "max_dup_ngram_coverage", "llama3_dup_ngrams", "log"),
        ("llama3_dirty_words", "max_dirty_words", "llama3_dirty_words", "dirty"),
        ("llama3_token_kl", "max_token_kl", "llama3_token_kl", "random"),
    ],
)
def test_each_rule_drops_just_above_its_threshold(english_reference, column, param, reason, text):
    body = {
        "log": log_lines(40),
        "dirty": PROSE + " Ass, ass! Sex... porn and the class assumes.",
        "random": PROSE + random_tokens(60),
    }[text]
    off = {"max_dup_ngram_coverage": None, "max_dirty_words": None, "max_token_kl": None}
    table = docs(body)
    value = run(stage(reference=english_reference, **off), table)[column][0].as_py()
    assert value is not None and value > 0
    if column == "llama3_dirty_words":
        assert value == 4  # ass, ass, sex, porn; not "class" nor "assumes"
        below = value - 1
    else:
        below = value - 1e-9
    at = run(stage(reference=english_reference, **{**off, param: value}), table)
    assert at["reason"].to_pylist() == [None]
    above = run(stage(reference=english_reference, **{**off, param: below}), table)
    assert above["reason"].to_pylist() == [reason]


def test_thresholds_are_declared_and_signals_logged(english_reference):
    assert Llama3Heuristics.thresholds == {
        "max_dup_ngram_coverage",
        "max_dirty_words",
        "max_token_kl",
    }
    s = stage(reference=english_reference)
    res = s.process(docs(PROSE * 3))
    for name in ("llama3_dup_ngram_coverage", "llama3_dirty_words", "llama3_token_kl"):
        assert name in res.log.column_names and name in res.table.column_names
    assert "_words" in res.table.column_names  # shared with the other heuristics
    assert pickle.loads(pickle.dumps(s)).params == s.params


def test_dirty_words_follow_the_language_column():
    table = docs(
        "Scheiße, so ein Arschloch! " + PROSE,
        "Scheiße, so ein Arschloch! " + PROSE,
        "操你妈 " * 3 + "性别 女の子",  # no spaces needed; allow-listed entries not counted
        "kein Wort " + PROSE,
        language=["de", "en", "zh", "xx"],
    )
    counts = run(stage(), table)["llama3_dirty_words"].to_pylist()
    assert counts[0] == 2 and counts[1] == 0 and counts[2] == 3
    assert counts[3] is None  # no list for this language: not scored, kept
    # no language column: the default language's list
    assert run(stage(default_language="de"), docs("Arschloch"))["llama3_dirty_words"][0].as_py()


def test_own_dirty_word_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("frobnicate\nbad phrase\n")
    s = stage(dirty_word_lists={"en": str(path)}, max_dirty_words=1)
    log = run(s, docs("We frobnicate. A bad  phrase, and bad phrases.", "ass ass ass"))
    assert log["llama3_dirty_words"].to_pylist() == [2, 0]
    assert log["reason"].to_pylist() == ["llama3_dirty_words", None]
    with pytest.raises(ConfigError, match="dirty_word_lists.en.*nope.txt"):
        stage(dirty_word_lists={"en": str(tmp_path / "nope.txt")})


# --- the reference -----------------------------------------------------------------------------


def test_missing_reference_fails_at_build_time_and_none_skips_kl(tmp_path):
    missing = tmp_path / "no-such-ref.json"
    with pytest.raises(ConfigError, match="no-such-ref.json"):
        stage(reference=str(missing))
    with pytest.raises(ConfigError, match=r"reference\.de.*no-such-ref.json"):
        stage(reference={"de": str(missing)})
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="bad.json"):
        stage(reference=str(bad))
    log = run(stage(), docs(random_tokens(300)))
    assert log["llama3_token_kl"].to_pylist() == [None]
    assert log["reason"].to_pylist() == [None]


def test_build_reference_from_texts_jsonl_and_parquet(tmp_path):
    texts = [PROSE, "Another page about the cat and the dog."]
    jsonl = tmp_path / "c.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": texts}), parquet)
    summaries = [
        build_reference(src, tmp_path / f"r{i}.json", top_k=5)
        for i, src in enumerate([texts, str(jsonl), parquet])
    ]
    assert summaries[0] == summaries[1] == summaries[2]
    assert summaries[0]["documents"] == 2 and summaries[0]["top_k"] == 5
    ref = load_reference(tmp_path / "r0.json")
    assert ref.vocab.to_pylist()[0] == "the"
    probs = np.exp(ref.log_probs)
    assert 0 < probs.sum() < 1 and ref.oov_log_prob < ref.log_probs.min()


def test_kl_per_language_reference(english_reference):
    table = docs(PROSE * 2, PROSE * 2, language=["en", "de"])
    kl = run(stage(reference={"en": english_reference}), table)["llama3_token_kl"].to_pylist()
    assert kl[0] is not None and kl[1] is None


# --- inputs that must get a decision and never an exception -------------------------------------


def test_odd_documents_get_a_decision(english_reference):
    texts = [
        None,
        "",
        "   \n\n  ",
        "x" * 10_000_000,  # one 10 MB line
        "中华人民共和国是一个位于东亚的国家，首都是北京。今天天气很好，我们一起去公园散步吧。" * 50,
        "素早い茶色の狐は怠け者の犬を飛び越え、農夫は玄関からそれを見ていた。" * 50,
        "القفز الثعلب البني السريع فوق الكلب الكسول بينما كان المزارع يراقب من الشرفة. " * 50,
        "השועל החום המהיר קופץ מעל הכלב העצלן בזמן שהאיכר צופה מהמרפסת. " * 50,
        "\u200f\u202e" + "abc " * 100 + "\x00\ufffd",
    ]
    for language in (None, [None, "en", "en", "en", "zh", "ja", "ar", "he", "en"]):
        table = docs(*texts, language=language)
        log = run(stage(reference=english_reference), table)
        assert log.num_rows == len(texts)
        reasons = log["reason"].to_pylist()
        assert reasons[:3] == [None, None, None]  # nothing to judge: kept
        assert all(r in (None, "llama3_dup_ngrams", "llama3_dirty_words", "llama3_token_kl")
                   for r in reasons)  # fmt: skip


# --- real documents --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """English reference from half of the extracted CC text; the other half and the WARC
    documents (resiliparse) to judge, with their language; "clean" = English and kept by the
    FineWeb chain (gopher_repetition, gopher_quality, c4, fineweb)."""
    data = require_shared_data()
    tmp = tmp_path_factory.mktemp("llama3_real")
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    out = tmp / "out"
    config = write_config(tmp / "c.yaml", [str(data / "warc" / "*.warc.gz")], out, FAST_STAGES)
    proc = run_cli("run", str(config), "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warc = documents(out)
    lid = LanguageFilter()

    def table(ids, texts):
        t = docs(*[x or "" for x in texts]).set_column(0, "id", pa.array(ids, pa.string()))
        return t.append_column("language", lid.score(t)["language"])

    half_a = table([r["id"] for r in rows[::2]], [r["text"] for r in rows[::2]])
    pairs = zip(half_a["text"].to_pylist(), half_a["language"].to_pylist(), strict=True)
    english_a = [text for text, lang in pairs if lang == "en"]
    ref = tmp / "ref.json"
    build_reference(english_a, ref)
    judged = pa.concat_tables(
        [
            table([r["id"] for r in rows[1::2]], [r["text"] for r in rows[1::2]]),
            table(warc["id"].to_pylist(), warc["text"].to_pylist()),
        ]
    )
    clean = judged.filter(pa.compute.equal(judged["language"], "en"))
    for cls in (GopherRepetition, GopherQuality, C4Quality, FineWebQuality):
        clean = cls().process(clean).table
    return str(ref), judged, set(clean["id"].to_pylist())


def test_real_clean_english_kept_and_planted_junk_dropped(real):
    ref, judged, clean_ids = real
    junk = {
        "log": log_lines(),
        "dirty": adult_page(),
        "random": random_tokens(),
    }  # fmt: skip
    planted = docs(*junk.values()).set_column(0, "id", pa.array(list(junk), pa.string()))
    planted = planted.append_column("language", pa.array(["en"] * 3, pa.string()))
    table = pa.concat_tables([judged.select(planted.column_names), planted])
    log = run(stage(reference=ref), table)
    reason = dict(zip(log["id"].to_pylist(), log["reason"].to_pylist(), strict=True))
    assert reason["log"] == "llama3_dup_ngrams"
    assert reason["dirty"] == "llama3_dirty_words"
    assert reason["random"] == "llama3_token_kl"
    kept = [reason[i] is None for i in clean_ids]
    rate = sum(kept) / len(kept)
    print(f"\nclean English kept: {sum(kept)}/{len(kept)} = {rate:.1%}")
    names = ["id", "reason", *Llama3Heuristics().signal_names()]
    for row in log.select(names).to_pylist():
        if row["id"] in clean_ids and row["reason"] is not None:
            print("  clean but dropped:", row)
    assert len(kept) > 100 and rate >= 0.98
    # another language's pages against the English reference
    langs = dict(zip(judged["id"].to_pylist(), judged["language"].to_pylist(), strict=True))
    german = [reason[i] == "llama3_token_kl" for i, lang in langs.items() if lang == "de"]
    print(f"German pages dropped as llama3_token_kl: {sum(german)}/{len(german)}")
    assert len(german) > 100 and sum(german) / len(german) >= 0.9
