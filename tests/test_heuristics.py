"""Heuristic filters (gopher_repetition, gopher_quality, c4, fineweb) on tiny tables."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from refine.errors import ConfigError
from refine.filters import words as W
from refine.filters.c4 import C4Quality
from refine.filters.fineweb import FineWebQuality
from refine.filters.gopher import GopherQuality, GopherRepetition

PROSE = (
    "The cat sat on the mat and looked at the garden with great interest. "
    "It was a sunny day, and the birds were singing in the old oak tree. "
    "Nobody knew that the cat had been waiting there for hours to see them. "
    "Later that evening, the family came home and found it asleep by the door. "
    "They have always said that the cat is the true owner of the house. "
)


def docs(*texts: str | None) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://x/{i}" for i in range(n)],
            "text": pa.array(texts, pa.large_string()),
            "source": [f"f#{i}" for i in range(n)],
        }
    )


def reasons(stage, table: pa.Table) -> list[str | None]:
    return stage.process(table).log["reason"].to_pylist()


def signal(stage, table: pa.Table, name: str) -> list:
    return stage.process(table).log[name].to_pylist()


# --- words ---------------------------------------------------------------------------------


def test_words_follow_spacy_english_rules():
    assert W.split_words("Hello, world! I don't know (e.g. Mr. Smith's) well-known.") == [
        "Hello", ",", "world", "!", "I", "do", "n't", "know", "(", "e.g.", "Mr.", "Smith",
        "'s", ")", "well", "-", "known", ".",
    ]  # fmt: skip
    assert W.split_words("see http://example.com/a?b=1. U.S. $100...") == [
        "see", "http://example.com/a?b=1", ".", "U.S.", "$", "100", "...",
    ]  # fmt: skip
    assert W.split_words("") == [] and W.split_words(" \n\t ") == []


# --- gopher_repetition ---------------------------------------------------------------------


def test_gopher_repetition_line_and_paragraph_rules_at_the_edge():
    stage = GopherRepetition()
    # 10 lines, 3 repeat an earlier one: 0.3 is not > 0.3; 4 repeats is
    kept = "\n".join([f"line number {i} is here" for i in range(7)] + ["same"] * 3 + ["same"])
    assert signal(stage, docs(kept), "gopher_rep_dup_line_frac") == [pytest.approx(3 / 11)]
    para = "\n\n".join(["alpha beta", "alpha beta", "gamma delta", "epsilon zeta"])
    assert reasons(stage, docs(para)) == ["dup_para_frac"] or reasons(stage, docs(para)) == [
        "dup_para_char_frac"
    ]
    assert reasons(stage, docs("")) == ["empty"]


def test_gopher_repetition_ngram_rules():
    stage = GopherRepetition()
    repeated = " ".join(["spam eggs"] * 30)
    r = stage.process(docs(repeated, PROSE)).log
    assert r["reason"].to_pylist()[0] == "top_2_gram"
    assert r["gopher_rep_top_2_gram_frac"][0].as_py() == pytest.approx(
        30 * len("spam eggs") / len(repeated)
    )
    # a repeated 5-gram in otherwise unique words
    words = [f"w{i}" for i in range(200)]
    text = " ".join(words + words[:60])
    log = stage.process(docs(text)).log
    assert log["gopher_rep_dup_5_gram_frac"][0].as_py() > 0.15
    assert log["reason"][0].as_py() == "duplicated_5_n_grams"


def test_gopher_repetition_ngram_signals_match_datatrove_functions_on_a_batch():
    """Many documents in one batch (so n-gram jumps meet document boundaries), made of few
    words so that n-grams overlap and repeat in every pattern; ground truth: datatrove's own
    ``find_top_duplicate`` / ``find_all_duplicate`` on the same words."""
    gopher_rep = pytest.importorskip("datatrove.pipeline.filters.gopher_repetition_filter")
    rng = random.Random(7)
    vocab = ["ab", "cd", "ef", "gh", "ij"]  # equal lengths: "".join is unambiguous
    texts = []
    for _ in range(300):
        size = rng.choice([1, 4, 9, 11, 30, 80])
        words = [rng.choice(vocab[: rng.randint(1, 5)]) for _ in range(size)]
        if rng.random() < 0.3:  # a repeated block at the very end, then the next document
            words += words[: rng.randint(5, 12)]
        texts.append(" ".join(words))
    stage = GopherRepetition()
    log = stage.process(docs(*texts)).log
    for i, text in enumerate(texts):
        words = text.split()
        for n, _ in stage.params.top_n_grams:
            grams = gopher_rep.get_n_grams(words, n)
            want = gopher_rep.find_top_duplicate(grams) / len(text) if grams else 0.0
            got = log[f"gopher_rep_top_{n}_gram_frac"][i].as_py()
            assert got == pytest.approx(want), (i, n, text)
        for n, _ in stage.params.dup_n_grams:
            want = gopher_rep.find_all_duplicate(words, n) / len(text)
            got = log[f"gopher_rep_dup_{n}_gram_frac"][i].as_py()
            assert got == pytest.approx(want), (i, n, text)


def test_gopher_repetition_threshold_change_keeps_signals():
    text = "\n".join(PROSE.split(". ")[:4] + ["dup"] * 3)  # 2 of 7 lines repeat: 0.29
    text += "\ndup"  # 3 of 8: 0.375
    base = GopherRepetition().process(docs(text)).log
    loose = GopherRepetition(GopherRepetition.Params(dup_line_frac=0.5)).process(docs(text)).log
    assert base["reason"].to_pylist() == ["dup_line_frac"]
    assert loose["reason"].to_pylist() != ["dup_line_frac"]
    for name in GopherRepetition().signal_names():
        assert base[name].to_pylist() == loose[name].to_pylist()


# --- gopher_quality ------------------------------------------------------------------------


def test_gopher_quality_rules_trigger_at_their_edges():
    stage = GopherQuality()
    assert reasons(stage, docs(PROSE)) == [None]
    words = ("the and " + "word " * 48).strip()  # 50 words: enough; 49 is short
    assert reasons(stage, docs(words)) == [None]
    assert reasons(stage, docs(words.rsplit(" ", 1)[0])) == ["gopher_short_doc"]
    assert reasons(stage, docs("the and " + "ab " * 60)) == ["gopher_below_avg_threshold"]
    assert reasons(stage, docs("the and " + "abcdefghijklmnop " * 60)) == [
        "gopher_above_avg_threshold"
    ]
    assert reasons(stage, docs(PROSE + " #tag" * 10)) == ["gopher_too_many_hashes"]
    bullets = "\n".join(["- " + PROSE[:60]] * 10)
    assert reasons(stage, docs(bullets)) == ["gopher_too_many_bullets"]
    no_stop = " ".join(["cats", "dogs", "birds", "fish"] * 20)
    assert reasons(stage, docs(no_stop)) == ["gopher_enough_stop_words"]
    assert reasons(stage, docs("")) == ["gopher_short_doc"]


def test_gopher_quality_threshold_change_keeps_signals():
    short = " ".join(["the", "and"] + ["word"] * 38)
    base = GopherQuality().process(docs(short)).log
    relaxed = GopherQuality(GopherQuality.Params(min_doc_words=10)).process(docs(short)).log
    assert base["reason"].to_pylist() == ["gopher_short_doc"]
    assert relaxed["reason"].to_pylist() == [None]
    for name in GopherQuality().signal_names():
        assert base[name].to_pylist() == relaxed[name].to_pylist()


# --- c4 ------------------------------------------------------------------------------------


def test_c4_drops_lines_and_keeps_the_rest():
    text = "\n".join(
        [
            "Menu",  # no terminal punctuation
            "Please enable JavaScript in your browser.",
            "This site uses cookies to improve your experience.",
            "Short one.",  # two words
            "The first real sentence is here. And a second one follows it.",
            "A third sentence ends this line [1].",
            "Here comes the fourth sentence. The fifth one closes the page!",
        ]
    )
    res = C4Quality().process(docs(text))
    assert res.log["reason"].to_pylist() == [None]
    assert res.log["c4_num_sentences"].to_pylist() == [5]
    assert res.table["text"].to_pylist() == [
        "The first real sentence is here. And a second one follows it.\n"
        "A third sentence ends this line .\n"
        "Here comes the fourth sentence. The fifth one closes the page!"
    ]
    assert res.stats.bytes_out == len(res.table["text"][0].as_py().encode())
    # the shared words now describe the rewritten text
    assert res.table[W.WORDS_COLUMN].to_pylist() == W.split_texts(res.table["text"]).to_pylist()


def test_c4_document_rules_in_line_order():
    five = " ".join(["This is a sentence."] * 5)
    assert reasons(C4Quality(), docs(five)) == [None]
    assert reasons(C4Quality(), docs(" ".join(["This is a sentence."] * 4))) == [
        "too_few_sentences"
    ]
    # a line only reaches these rules when it ends with punctuation and has 3+ words
    lorem_first = "Lorem ipsum dolor sit amet.\nThe value is {x} here."
    curly_first = "The value is {x} here.\nLorem ipsum dolor sit amet."
    assert reasons(C4Quality(), docs(lorem_first, curly_first)) == ["lorem_ipsum", "curly_bracket"]
    relaxed = C4Quality(C4Quality.Params(min_num_sentences=4))
    four = " ".join(["This is a sentence."] * 4)
    assert reasons(relaxed, docs(four)) == [None]
    assert signal(relaxed, docs(four), "c4_num_sentences") == signal(
        C4Quality(), docs(four), "c4_num_sentences"
    )


def _badword_docs(texts, languages=None) -> pa.Table:
    table = docs(*texts)
    if languages is not None:
        table = table.append_column("language", pa.array(languages, pa.string()))
    return table


def test_c4_badwords_rule_is_off_by_default_and_drops_when_on():
    dirty = PROSE + "\nWhat the fuck happened to the garden that day."
    hidden = PROSE + "\nfuck this line has no final punctuation"  # the line rules drop it first
    scunthorpe = PROSE + "\nThe club from Scunthorpe won the cup that season."
    table = docs(dirty, hidden, scunthorpe, PROSE)
    assert reasons(C4Quality(), table) == [None] * 4
    assert "c4_badwords" not in C4Quality().process(table).log.column_names
    stage = C4Quality(C4Quality.Params(filter_badwords=True))
    log = stage.process(table).log
    assert log["c4_badwords"].to_pylist() == [1, 0, 0, 0]
    assert log["reason"].to_pylist() == ["document_removed_with_badwords", None, None, None]


def test_c4_badwords_follow_the_language_column():
    german = PROSE + "\nDer Kerl war ein echtes arschloch, sagten alle Nachbarn."
    table = _badword_docs([german, german, german, german], ["de", "en", "xx", None])
    stage = C4Quality(C4Quality.Params(filter_badwords=True))
    log = stage.process(table).log
    # de list: found; en list: not in it; xx: no list (kept, null); null: the default (en)
    assert log["c4_badwords"].to_pylist() == [1, 0, None, 0]
    assert log["reason"].to_pylist() == ["document_removed_with_badwords", None, None, None]
    # no spaces: entries match inside longer runs (the line has 3 words and ends with ".")
    japanese = PROSE + "\nこれはエロティックなページ です ね."
    log = stage.process(_badword_docs([japanese], ["ja"])).log
    assert log["c4_badwords"].to_pylist() == [1]


def test_c4_badwords_keep_fraction_is_deterministic_per_document(tmp_path):
    texts = [PROSE + f"\nDocument {i} says shit about the weather." for i in range(400)]
    table = docs(*texts)

    def kept(params, t=table) -> set[str]:
        return set(C4Quality(params).process(t).table["id"].to_pylist())

    half = C4Quality.Params(filter_badwords=True, badwords_keep_fraction=0.5, badwords_seed=3)
    first = kept(half)
    assert 140 <= len(first) <= 260  # binomial(400, 0.5): mean 200, sd 10
    # the draw depends on the document, not on the batch it is in or the order
    parts = kept(half, table.slice(0, 150)) | kept(
        half, table.slice(150).take(list(range(249, -1, -1)))
    )
    assert parts == first
    assert kept(half.model_copy(update={"badwords_seed": 4})) != first
    assert kept(half.model_copy(update={"badwords_keep_fraction": 0.0})) == set()
    assert kept(half.model_copy(update={"badwords_keep_fraction": 1.0})) == set(
        table["id"].to_pylist()
    )
    assert "badwords_keep_fraction" in C4Quality.thresholds  # re-tuned on the saved signal


def test_c4_badwords_lists_from_the_config(tmp_path):
    words = tmp_path / "en.txt"
    words.write_text("garden\n")
    stage = C4Quality(C4Quality.Params(filter_badwords=True, badwords_lists={"en": str(words)}))
    stage.check()
    assert reasons(stage, docs(PROSE)) == ["document_removed_with_badwords"]
    missing = C4Quality(C4Quality.Params(filter_badwords=True, badwords_lists={"en": "/nope.txt"}))
    with pytest.raises(ConfigError, match="badwords_lists.en"):
        missing.check()


# --- fineweb -------------------------------------------------------------------------------


def test_fineweb_rules_trigger_at_their_edges():
    stage = FineWebQuality()
    long_line = "This line is long enough to not count as a short line at all."
    assert reasons(stage, docs(long_line)) == [None]
    assert reasons(stage, docs(long_line.rstrip("."))) == ["line_punct_ratio"]
    short = "\n".join(["Short line."] * 1 + [long_line] * 0)
    assert reasons(stage, docs(short)) == ["short_line_ratio"]
    dup = "\n".join([long_line, long_line])
    assert reasons(stage, docs(dup)) == ["char_dup_ratio"]
    listy = "\n".join(f"{long_line[:-1]} number {i}." for i in range(3)) + "\n" * 40
    assert reasons(stage, docs(listy)) == ["list_ratio"]
    assert reasons(stage, docs("", " \n ")) == ["empty", "empty"]


def test_fineweb_threshold_change_keeps_signals():
    text = "\n".join(
        ["Short line.", "Another one.", "A third.", "This line is long enough to not be short."]
    )
    base = FineWebQuality().process(docs(text)).log
    relaxed = FineWebQuality(FineWebQuality.Params(short_line_thr=0.9)).process(docs(text)).log
    assert base["reason"].to_pylist() == ["short_line_ratio"]
    assert relaxed["reason"].to_pylist() == [None]
    for name in FineWebQuality().signal_names():
        assert base[name].to_pylist() == relaxed[name].to_pylist()


# --- robustness and sharing ----------------------------------------------------------------

AWKWARD = [
    None,
    "",
    "x" * 10_000_000,  # a 10 MB single line
    "我们的网站提供最新的新闻和信息。今天天气很好，我们去公园散步吧。" * 50,
    "今日は良い天気ですね。東京タワーに行きましょう。日本語の文章には空白がありません。" * 50,
    "مرحبا بكم في موقعنا. هذا نص عربي للاختبار، ويجب أن يعمل الفلتر بدون أخطاء." * 20,
    "שלום עולם. זהו טקסט בעברית לבדיקה, והמסנן צריך לעבוד בלי שגיאות." * 20,
    "Mixed: English, русский текст, 中文字符, العربية, and emoji 🎉🎉 in one line!!!\n" * 20,
    "\n\n\n",
    "{{{{}}}}[[[[]]]]((((" * 1000,
]


@pytest.mark.parametrize("stage_cls", [GopherRepetition, GopherQuality, C4Quality, FineWebQuality])
def test_awkward_documents_get_a_decision(stage_cls):
    res = stage_cls().process(docs(*AWKWARD))
    assert res.log.num_rows == len(AWKWARD)
    assert res.stats.docs_in == len(AWKWARD)
    res.stats.check_balance()


def test_words_are_split_once_along_the_chain(monkeypatch):
    calls = []
    real = W.compute_words

    def counting(table):
        calls.append(table.num_rows)
        return real(table)

    monkeypatch.setattr(W, "compute_words", counting)
    # lines that C4 keeps as they are, so no stage has a reason to re-split
    text = PROSE.strip() + "\nAnd one more line closes this short story for the tests."
    table = docs(text, text.replace("cat", "dog"))
    for stage in (GopherRepetition(), GopherQuality(), C4Quality(), FineWebQuality()):
        table = stage.process(table).table
    assert calls == [2]  # gopher_repetition split both documents; the others reused `_words`
    assert table.num_rows == 2
    assert table[W.WORDS_COLUMN].to_pylist() == W.split_texts(table["text"]).to_pylist()
