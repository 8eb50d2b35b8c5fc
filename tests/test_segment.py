"""Word segmentation of scripts written without spaces (refine/pipeline/segment.py) and its use by
the heuristic filters' words, dedup_minhash's shingles, dedup_substring's tokens and
decontamination's n-grams. Real Chinese and Japanese pages come from the shared crawl samples."""

from __future__ import annotations

import functools
import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from support import REPO, require_shared_data

from refine.dedup.minhash import DedupMinhash, DedupMinhashParams
from refine.dedup.signatures import MinHasher, shingles, sorted_unique_sets
from refine.dedup.substring import DedupSubstring, token_spans, tokenize
from refine.filters import words as W
from refine.filters.decontaminate import Decontaminate
from refine.pipeline import segment as S
from refine.pipeline.stage import GlobalContext

HAN = re.compile(r"[\u4e00-\u9fff]")
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")

# Written for these tests: ordinary news / shop / travel Japanese and Chinese.
JAPANESE = (
    "東京都は日本の首都であり、政治や経済、文化の中心地として知られています。\n"
    "政府は二十日の閣議で、物価高に対応するための新たな経済対策を決定しました。"
    "電気料金やガス料金の負担を軽減する補助金を来年三月まで延長します。\n"
    "京都の清水寺は、春の桜や秋の紅葉の季節には多くの観光客が訪れます。"
)
CHINESE = (
    "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。\n"
    "国家统计局今天发布数据显示，今年前三季度国内生产总值同比增长百分之五。"
    "专家认为，消费和投资的稳定增长是经济回升的主要原因。"
)


@functools.cache
def _crawl_pages() -> dict[str, str]:
    """url -> extracted text of the Chinese and Japanese pages of two real crawl samples
    (trafilatura with refine's default options, as the extract stage runs it)."""
    data = require_shared_data()
    sys.path.insert(0, str(REPO / "scripts"))
    import trafilatura
    from bench_vs_datatrove import html_pages

    from refine.extract.engines import ExtractConfig

    options = ExtractConfig().trafilatura_options()
    files = [
        data / "warc" / "web-pages-a.warc.gz",
        data / "warc" / "cc-main-2020-34-sample.warc.gz",
    ]
    out = {}
    for html, url in html_pages(files):
        text = trafilatura.extract(html, url=url, **options)
        if text and len(CJK.findall(text)) > 0.3 * len(text):
            out[url] = text
    return out


def _page(url_part: str) -> str:
    found = [t for u, t in _crawl_pages().items() if url_part in u]
    assert len(found) == 1, url_part
    return found[0]


def _nhk() -> str:  # NHK News Web Easy: Japanese, kana and kanji
    return _page("nhk.or.jp")


def _banyuetan() -> str:  # a Chinese news magazine article
    return _page("banyuetan.org")


def _baike() -> str:  # a Baidu Baike (Chinese encyclopedia) article
    return _page("baike.baidu.com")


# -- deciding which documents are segmented ---------------------------------------------------


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("zh", "zh"),
        ("cmn_Hani", "zh"),
        ("yue_Hant", "zh"),
        ("zh-TW", "zh"),
        ("ja", "ja"),
        ("jpn_Jpan", "ja"),
        ("th", "th"),
        ("tha_Thai", "th"),
        ("km", "km"),
        ("khm_Khmr", "km"),
        ("lo", "lo"),
        ("lao_Laoo", "lo"),
        ("my", "my"),
        ("mya_Mymr", "my"),
        ("en", None),
        ("deu_Latn", None),
        ("kor_Hang", None),
        ("", None),
        (None, None),
    ],
)
def test_language_labels_of_lid176_and_glotlid(label, key):
    assert S.segmenter_for_language(label) == key


def test_unlabelled_documents_are_decided_by_their_script():
    texts = [
        CHINESE,
        JAPANESE,
        "สวัสดีครับ วันนี้อากาศดีมาก เราจะไปเที่ยวทะเลกัน",
        "The Tokyo (東京) office of the company opened in 2019 and now employs forty people.",
        "Plain English text.",
        None,
    ]
    assert S.segmenters(pa.array(texts)).tolist() == ["zh", "ja", "th", None, None, None]
    assert S.segmenters(pa.array(texts[3:])) is None  # nothing to segment: the batch path
    # a label wins over the script, a null label falls back to it
    labels = pa.array(["en", None, "tha_Thai", "zh", None, None])
    assert S.segmenters(pa.array(texts), labels).tolist() == [None, "ja", "th", "zh", None, None]


# -- words -------------------------------------------------------------------------------------


def _assert_sensible(words: list[str], text: str, expected: set[str]) -> None:
    """Words of a page in a script without spaces: many short words, not one per line."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    han_words = [w for w in words if HAN.search(w)]
    assert len(words) > 8 * len(lines)
    assert np.mean([len(w) for w in han_words]) < 2.5
    assert max(len(w) for w in han_words) <= 8
    assert expected <= set(words), expected - set(words)
    assert "".join(words) == re.sub(r"\s+", "", text)  # nothing lost, nothing added


def test_real_chinese_page_splits_into_words():
    text = _banyuetan()
    words = W.split_texts([text], ["zh"]).to_pylist()[0]
    expected = {"记者", "城市", "作家", "数字", "农业", "社会", "视频", "互联网", "农产品", "模式"}
    _assert_sensible(words, text, expected)
    assert "60" in words  # digits and punctuation split as in English text
    assert "“" in words and "，" in words
    # a null label: its script gives the same words
    assert W.split_texts([text], [None]).to_pylist()[0] == words


def test_real_japanese_page_splits_into_words():
    text = _nhk()
    words = W.split_texts([text], ["jpn_Jpan"]).to_pylist()[0]
    expected = {"子ども", "虐待", "法律", "親", "教育", "禁止", "児童", "相談", "事件", "専門"}
    _assert_sensible(words, text, expected)
    assert {"を", "が", "の", "は"} <= set(words)  # particles are words of their own


def test_written_chinese_and_japanese_split_into_words():
    zh = W.split_texts([CHINESE], ["zh"]).to_pylist()[0]
    _assert_sensible(zh, CHINESE, {"北京", "首都", "政治", "文化", "经济", "增长", "专家"})
    ja = W.split_texts([JAPANESE], ["ja"]).to_pylist()[0]
    _assert_sensible(ja, JAPANESE, {"東京", "首都", "政府", "経済", "対策", "観光", "清水"})


def test_latin_words_inside_a_chinese_page_split_as_in_english():
    text = "苹果公司发布了iPhone 12，售价为$799 (don't miss it)。"
    words = W.split_texts([text], ["zh"]).to_pylist()[0]
    english = W.split_spaced(["iPhone 12 $799 (don't miss it)."]).to_pylist()[0]
    assert [w for w in words if not HAN.search(w) and w not in "，。"] == english[:-1]
    assert {"苹果公司", "发布", "售价"} <= set(words)


def test_other_scripts_without_spaces_split():
    thai = "สวัสดีครับ วันนี้อากาศดีมาก"
    assert W.split_texts([thai], ["th"]).to_pylist()[0] == [
        "สวัสดี", "ครับ", "วันนี้", "อากาศ", "ดีมาก",
    ]  # fmt: skip
    khmer = "ព្រះរាជាណាចក្រកម្ពុជា គឺជាប្រទេសមួយ"
    assert W.split_texts([khmer], ["km"]).to_pylist()[0] == [
        "ព្រះរាជាណាចក្រ", "កម្ពុជា", "គឺជា", "ប្រទេស", "មួយ",
    ]  # fmt: skip
    burmese = "မြန်မာနိုင်ငံသည် အရှေ့တောင်အာရှတွင် တည်ရှိသည်။"
    assert W.split_texts([burmese], ["my"]).to_pylist()[0] == [
        "မြန်မာ", "နိုင်ငံ", "သည်", "အရှေ့တောင်", "အာရှ", "တွင်", "တည်ရှိ", "သည်", "။",
    ]  # fmt: skip


def test_english_words_unchanged_and_rows_keep_their_order(tmp_path):
    data = require_shared_data()
    import gzip

    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz") as f:
        english = [json.loads(line)["text"] for line in f][:200]
    keys = S.segmenters(pa.array(english))
    english_only = [t for t, k in zip(english, keys, strict=True) if k is None]
    assert len(english_only) >= 190
    spaced = W.split_spaced(english_only)
    # no language column, or "en" labels: the batch path, word for word
    assert W.compute_words(pa.table({"text": english_only})).equals(spaced)
    # without a language column nothing is segmented, as datatrove's filters with language="en"
    assert W.compute_words(pa.table({"text": [CHINESE]})).equals(W.split_spaced([CHINESE]))
    labelled = pa.table({"text": english_only, "language": ["en"] * len(english_only)})
    assert W.compute_words(labelled).equals(spaced)
    # an "en" label keeps even a page with Chinese in it on the English rules
    assert W.split_texts([CHINESE], ["en"]).equals(W.split_spaced([CHINESE]))
    # a mixed batch: each row gets what it gets alone
    mixed = [english_only[0], CHINESE, None, JAPANESE, english_only[1], ""]
    langs = ["en", "zh", None, None, None, "ja"]
    got = W.split_texts(mixed, langs).to_pylist()
    alone = [
        W.split_texts([t], [lang]).to_pylist()[0] for t, lang in zip(mixed, langs, strict=True)
    ]
    assert got == alone
    assert got[0] == spaced.to_pylist()[0] and got[2] == [] and got[5] == []


# -- dedup_minhash -----------------------------------------------------------------------------

_POOL = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"


def _plant_edits(text: str, rng: random.Random) -> str:
    """One Han character replaced in every line that has two or more: a rewritten copy that
    whitespace shingles cannot recognise (normalising turns punctuation into spaces, so their
    "words" are whole clauses, and one edit changes every shingle over its clause)."""
    out = []
    for line in text.split("\n"):
        pos = [m.start() for m in HAN.finditer(line)]
        if len(pos) >= 2:
            p = rng.choice(pos)
            line = line[:p] + rng.choice([c for c in _POOL if c != line[p]]) + line[p + 1 :]
        out.append(line)
    return "\n".join(out)


def _jaccard(texts: list[str], languages: list[str]) -> float:
    sh = shingles(pa.array(texts, pa.large_string()), 5, pa.array(languages))
    a, b = (np.frombuffer(s, "<u8") for s in sorted_unique_sets(sh).to_pylist())
    return np.intersect1d(a, b).size / np.union1d(a, b).size


def test_minhash_shingles_of_edited_chinese_pages():
    original = _banyuetan()
    copy = _plant_edits(original, random.Random(1))
    assert copy != original
    segmented = _jaccard([original, copy], ["zh", "zh"])
    whitespace = _jaccard([original, copy], ["en", "en"])  # "en": the whitespace splitter
    assert segmented > 0.75
    assert whitespace < 0.45
    # by script, without a label, the same as labelled
    assert _jaccard([original, copy], [None, None]) == segmented
    hasher = MinHasher(112, 1, 5)
    sig, _ = hasher.signatures(pa.array([original, copy]), pa.array(["zh", "zh"]))
    assert (sig[0] == sig[1]).mean() > 0.6
    sig, _ = hasher.signatures(pa.array([original, copy]), pa.array(["en", "en"]))
    assert (sig[0] == sig[1]).mean() < 0.45


def _run_global(stage, tmp: Path, rows: list[dict]) -> tuple[set[str], pa.Table, pa.Table]:
    inp = tmp / "in"
    inp.mkdir(parents=True)
    half = len(rows) // 2
    for k, chunk in enumerate((rows[:half], rows[half:])):
        table = pa.Table.from_pylist(chunk).cast(
            pa.schema([(c, pa.large_string() if c == "text" else pa.string()) for c in chunk[0]])
        )
        pq.write_table(table, inp / f"part-{k:05d}.parquet")
    out = tmp / "out"
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        stats = stage.run(
            GlobalContext(
                input_dir=str(inp),
                output_dir=str(out / "documents"),
                log_dir=str(out / "log"),
                work_dir=str(out / "work"),
                client=c,
            )
        )
    stats.check_balance()
    docs = pq.read_table(out / "documents")
    return set(docs["id"].to_pylist()), docs, pq.read_table(out / "log")


@pytest.mark.parametrize(("language", "found"), [("zh", True), ("cmn_Hani", True), ("en", False)])
def test_dedup_minhash_finds_edited_chinese_copies(tmp_path, language, found):
    """FineWeb's MinHash settings; two real pages with edited copies, two other real Chinese
    pages. Labelled Chinese, the copies go; labelled English (whitespace shingles), all stay."""
    rng = random.Random(7)
    pages = {"a": _banyuetan(), "b": _baike(), "c": _page("003338.cn"), "d": _page("0513mt")}
    rows = [{"id": k, "text": t} for k, t in pages.items()]
    rows += [{"id": f"a-copy{i}", "text": _plant_edits(pages["a"], rng)} for i in range(2)]
    rows += [{"id": "d-copy", "text": _plant_edits(pages["d"], rng)}]
    for r in rows:
        r["language"] = language
    rng.shuffle(rows)
    stage = DedupMinhash(DedupMinhashParams(num_bands=14, rows_per_band=8, ngram=5, seed=1))
    kept, _, _ = _run_global(stage, tmp_path, rows)
    if found:
        assert kept == {"a", "b", "c", "d"}
    else:
        assert kept == {r["id"] for r in rows}


# -- dedup_substring ---------------------------------------------------------------------------


def test_substring_tokens_are_words_with_offsets():
    text = "新华社北京电 " + CHINESE
    words = W.split_texts([text], ["zh"]).to_pylist()[0]
    assert tokenize(text, "zh") == words  # punctuation and words as the filters see them
    assert tokenize(text) == words  # by script when no segmenter is given
    spans = token_spans(text, "zh")
    assert [text[a:b] for a, b in spans.tolist()] == words
    assert tokenize("Hello 北京 world", None) == ["Hello", "北", "京", "world"]  # unsegmented


def test_dedup_substring_cuts_a_chinese_passage_from_the_copy(tmp_path):
    passage = max(_banyuetan().split("\n"), key=len)  # a paragraph of ~200 characters
    assert len(tokenize(passage, "zh")) > 60
    first, second = CHINESE, JAPANESE.replace("。", "。\n")
    rows = [
        {"id": "1", "text": _baike()[:2000] + "\n" + passage, "language": "zh"},
        {"id": "2", "text": _page("0513mt") + "\n" + passage + "\n" + first, "language": "zh"},
        {"id": "3", "text": second, "language": "ja"},
    ]
    stage = DedupSubstring(DedupSubstring.Params(min_span_tokens=50, min_tokens=10))
    kept, docs, log = _run_global(stage, tmp_path, rows)
    got = dict(zip(docs["id"].to_pylist(), docs["text"].to_pylist(), strict=True))
    removed = dict(zip(log["id"].to_pylist(), log["tokens_removed"].to_pylist(), strict=True))
    assert removed == {"1": 0, "2": len(tokenize(passage, "zh")), "3": 0}  # words, not characters
    assert removed["2"] < 0.7 * len(passage)
    assert kept == {"1", "2", "3"}
    assert passage in got["1"] and got["3"] == second
    assert passage not in got["2"]
    assert got["2"].startswith(_page("0513mt")) and got["2"].rstrip().endswith(first[-40:])


# -- decontamination ---------------------------------------------------------------------------

QUESTION = (
    "根据文章内容，数字化农业给小农户带来了哪些好处？"
    "请结合益村售卖平台的例子，说明村民如何通过拍照和编辑文字把农产品挂上网销售。"
)


@pytest.fixture
def zh_benchmark(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "zh_quiz.jsonl"
    rows = [
        {"qid": "zh-1", "question": QUESTION, "answer": "A"},
        {
            "qid": "zh-2",
            "question": "下列哪一项不是光合作用的产物？氧气、葡萄糖、二氧化碳还是淀粉？",
        },
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return [{"path": str(path), "id_field": "qid", "name": "zh_quiz"}]


def _contaminated_page() -> str:
    """A real page with the question pasted in its middle, its punctuation changed."""
    lines = _banyuetan().split("\n")
    pasted = QUESTION.replace("，", ",").replace("？", "? ")
    return "\n".join(lines[:4] + [pasted] + lines[4:])


@pytest.mark.parametrize("language", ["zh", "cmn_Hani", None])
def test_chinese_benchmark_item_found(zh_benchmark, language):
    stage = Decontaminate(Decontaminate.Params(benchmarks=zh_benchmark))
    stage.check()
    texts = [_contaminated_page(), _banyuetan(), _baike()]
    table = pa.table({"id": ["x", "y", "z"], "text": pa.array(texts, pa.large_string())})
    if language is not None:
        table = table.append_column("language", pa.array([language] * 3))
    res = stage.process(table)
    log = {r["id"]: r for r in res.log.to_pylist()}
    assert log["x"]["reason"] == "contaminated" and log["x"]["decont_item"] == "zh-1"
    assert log["x"]["decont_hits"] > 5
    assert log["y"]["decont_hits"] == 0 and log["z"]["decont_hits"] == 0
    assert log["x"]["decont_words"] > 500  # words, not lines


def test_chinese_item_missed_when_the_document_is_not_segmented(zh_benchmark):
    """Both sides must segment alike: a page labelled English keeps whitespace words."""
    stage = Decontaminate(Decontaminate.Params(benchmarks=zh_benchmark))
    stage.check()
    table = pa.table(
        {"id": ["x"], "text": pa.array([_contaminated_page()]), "language": pa.array(["en"])}
    )
    assert stage.process(table).log["decont_hits"].to_pylist() == [0]


def test_cut_removes_the_chinese_item_and_keeps_the_page(zh_benchmark):
    stage = Decontaminate(
        Decontaminate.Params(
            benchmarks=zh_benchmark, action="cut", cut_margin=0, min_words_after_cut=20
        )
    )
    stage.check()
    page = _contaminated_page()
    table = pa.table({"id": ["x"], "text": pa.array([page]), "language": pa.array(["zh"])})
    res = stage.process(table)
    assert res.table.num_rows == 1
    new = res.table["text"].to_pylist()[0]
    assert "益村售卖平台的例子" not in new and "数字化农业给小农户" not in new
    original = _banyuetan().split("\n")
    assert new.startswith("\n".join(original[:3])) and new.endswith(original[-1])


def test_missing_segmenter_is_a_config_error_before_any_work(monkeypatch):
    import importlib.util

    from refine.errors import ConfigError

    S.check_available()  # all installed here
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rjieba" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="pip install rjieba"):
        S.check_available()
    with pytest.raises(ConfigError, match="pip install rjieba"):
        DedupSubstring(DedupSubstring.Params()).check()
