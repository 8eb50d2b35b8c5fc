"""language with the GlotLID backend (labels ``deu_Latn``: language and script), per-language
thresholds (FineWeb-2's ``language_score``), several languages kept, the ``language_script``
column (from the label with GlotLID, from the characters with lid.176).

The real GlotLID model cannot be downloaded here: a tiny fastText model in GlotLID's label
format is trained on made-up sentences from small word lists, written to a temporary folder, and
loaded both as a local path and as a hub id served by the Hub stand-in (tests/hubstub.py)."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from support import require_shared_data, run_cli, write_config

from refine.errors import ConfigError
from refine.filters.language import LanguageFilter, LanguageParams, text_script

WORDS = {
    "deu_Latn": "der die das und nicht mit auf für ist sich dem den von eine einer haben werden "
    "auch nach über wir ihr sie schön straße größe müssen können heute morgen arbeit haus "
    "wasser zeitung kinder schule stadt regierung wirtschaft",
    "eng_Latn": "the and not with on for is it that this from have will also after about we "
    "you they beautiful street size must can today tomorrow work house water newspaper "
    "children school city government economy",
    "cmn_Hani": "我们 你们 他们 今天 明天 工作 房子 中国 北京 学校 城市 政府 经济 报纸 孩子 "
    "水 美丽 街道 必须 可以 的 是 在 有 和 不 这 那 一个 没有",
    "rus_Cyrl": "и в не на что он с как это по но из его они мы вы сегодня завтра работа дом "
    "вода газета дети школа город правительство экономика улица красивый",
}
SCRIPTS = {"deu_Latn": "Latn", "eng_Latn": "Latn", "cmn_Hani": "Hani", "rus_Cyrl": "Cyrl"}


def sentence(lang: str, rng: random.Random, n: int = 12) -> str:
    words = rng.choices(WORDS[lang].split(), k=n)
    return ("" if lang == "cmn_Hani" else " ").join(words)


#: Trains in a process of its own: in a process where fastText already predicted on some
#: texts (tests/test_language.py's odd ones), training fails with "Encountered NaN".
TRAIN = """
import sys, fasttext
model = fasttext.train_supervised(
    input=sys.argv[1], epoch=10, lr=0.5, dim=16, minn=1, maxn=3, bucket=20000, thread=1,
    verbose=0,
)
model.save_model(sys.argv[2])
"""


@pytest.fixture(scope="module")
def glotlid_tiny(tmp_path_factory) -> Path:
    """A fastText classifier with GlotLID's labels (``__label__deu_Latn``), a few hundred KB."""
    pytest.importorskip("fasttext")
    folder = tmp_path_factory.mktemp("glotlid")
    rng = random.Random(0)
    lines = [f"__label__{lang} {sentence(lang, rng)}" for lang in WORDS for _ in range(300)]
    rng.shuffle(lines)
    train = folder / "train.txt"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / "model.bin"
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(train), str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return path


def docs(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://x/{i}" for i in range(n)],
            "text": pa.array(texts, pa.large_string()),
            "source": [f"f#{i}" for i in range(n)],
        }
    )


def by_id(log: pa.Table, column: str) -> dict:
    return dict(zip(log["id"].to_pylist(), log[column].to_pylist(), strict=True))


def corpus(seed: int = 1, per_language: int = 10) -> tuple[list[str], list[str]]:
    """(texts, the language each was made from), fresh sentences not in the training set."""
    rng = random.Random(seed)
    pairs = [(sentence(lang, rng), lang) for lang in WORDS for _ in range(per_language)]
    return [t for t, _ in pairs], [lang for _, lang in pairs]


def glotlid(model: Path, **params) -> LanguageFilter:
    stage = LanguageFilter(LanguageParams(backend="glotlid", model=str(model), **params))
    stage.check()
    return stage


def test_glotlid_labels_language_and_script(glotlid_tiny):
    texts, truth = corpus()
    res = glotlid(glotlid_tiny, languages=None, min_score=0).process(docs(texts))
    res.stats.check_balance()
    assert res.log["language"].to_pylist() == truth  # deu_Latn, not __label__deu_Latn
    assert res.log["language_script"].to_pylist() == [SCRIPTS[lang] for lang in truth]
    assert res.table.column_names[-3:] == ["language_script", "language", "language_score"]


def test_several_languages_kept(glotlid_tiny):
    texts, truth = corpus()
    res = glotlid(glotlid_tiny, languages=["deu_Latn", "cmn_Hani"], min_score=0).process(
        docs(texts)
    )
    kept = {lang for lang, keep in zip(truth, res.log["kept"].to_pylist(), strict=True) if keep}
    assert kept == {"deu_Latn", "cmn_Hani"}
    dropped = {r for r in res.log["reason"].to_pylist() if r}
    assert dropped == {"language_not_wanted"}
    assert res.table.num_rows == 20


def test_glotlid_defaults_keep_english(glotlid_tiny):
    texts, truth = corpus()
    params = LanguageParams(backend="glotlid", model=str(glotlid_tiny))
    assert params.languages == ["eng_Latn"]
    assert LanguageParams(backend="glotlid").model == "hf://cis-lmu/glotlid/model.bin"
    kept = LanguageFilter(params).process(docs(texts)).table
    assert set(kept["language"].to_pylist()) <= {"eng_Latn"}


def test_per_language_thresholds(glotlid_tiny):
    """Each document is judged by its own language's threshold (the table's ``default`` for
    languages it does not list); thresholds are re-tuned on the saved scores."""
    texts, _ = corpus(seed=2, per_language=20)
    first = glotlid(glotlid_tiny, languages=None, min_score=0).process(docs(texts))
    scores, langs = by_id(first.log, "language_score"), by_id(first.log, "language")

    def median(lang):
        values = sorted(s for i, s in scores.items() if langs[i] == lang)
        return values[len(values) // 2]

    table = {"deu_Latn": median("deu_Latn"), "rus_Cyrl": 1.0, "default": median("eng_Latn")}
    again = glotlid(glotlid_tiny, languages=None, min_score=table).process(
        docs(texts), previous=first.log
    )
    assert again.stats.counters["signals_reused"] == len(texts)
    threshold = {"deu_Latn": table["deu_Latn"], "rus_Cyrl": 1.0}
    want = {i: s > threshold.get(langs[i], table["default"]) for i, s in scores.items()}
    assert by_id(again.log, "kept") == want
    assert 0 < sum(want.values()) < len(texts)  # the thresholds cut inside the scores
    assert not any(k for i, k in want.items() if langs[i] == "rus_Cyrl")
    assert set(again.log["reason"].to_pylist()) == {None, "language_low_score"}


def test_fineweb2_thresholds_are_fineweb2s_language_scores(glotlid_tiny):
    configs = require_shared_data() / "fineweb2" / "configs"
    published = {
        p.stem: yaml.safe_load(p.read_text())["language_score"] for p in configs.glob("*.yml")
    }
    assert len(published) == 20
    texts, _ = corpus(seed=3, per_language=20)
    res = glotlid(glotlid_tiny, languages=None, min_score="fineweb2").process(docs(texts))
    for lang, score, kept in zip(
        res.log["language"].to_pylist(),
        res.log["language_score"].to_pylist(),
        res.log["kept"].to_pylist(),
        strict=True,
    ):
        assert kept == (score > pa.scalar(published.get(lang, 0.65), pa.float32()).as_py())
    assert "eng_Latn" not in published  # English is judged by the default threshold


def test_lid176_codes_find_their_fineweb2_threshold():
    """With lid.176, ``de`` is judged by FineWeb-2's ``deu_Latn`` threshold (0.821 published)."""
    german = "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer zuschaut."
    first = LanguageFilter(LanguageParams(languages=None, min_score=0)).process(docs([german]))
    score = first.log["language_score"][0].as_py()
    assert first.log["language"].to_pylist() == ["de"]
    for cut in (score - 0.01, score + 0.01):
        if not 0 <= cut <= 1:
            continue
        res = LanguageFilter(LanguageParams(languages=["de"], min_score={"deu_Latn": cut}))
        assert res.process(docs([german])).log["kept"].to_pylist() == [score > cut]


def test_lid176_script_from_the_characters():
    texts = {
        "Latn": "The quick brown fox jumps over the lazy dog.",
        "Hani": "中华人民共和国是一个位于东亚的国家，首都是北京。",
        "Jpan": "素早い茶色の狐は怠け者の犬を飛び越え、農夫は玄関からそれを見ていた。",
        "Arab": "القفز الثعلب البني السريع فوق الكلب الكسول بينما كان المزارع يراقب.",
        "Hebr": "השועל החום המהיר קופץ מעל הכלב העצלן בזמן שהאיכר צופה מהמרפסת.",
        "Cyrl": "Быстрая коричневая лиса прыгает через ленивую собаку (Moscow, 2024).",
        "Hang": "빠른 갈색 여우가 게으른 개를 뛰어넘는다.",
        "Deva": "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    }
    res = LanguageFilter(LanguageParams(languages=None, min_score=0)).process(
        docs(list(texts.values()) + ["1234 !!! ...", ""])
    )
    assert res.log["language_script"].to_pylist() == [*texts, None, None]
    assert text_script("a" * 10 + "中" * 5) == "Latn"


def test_glotlid_problems_fail_when_the_pipeline_is_built(glotlid_tiny, tmp_path):
    from refine.models import DEFAULT_LID_MODEL, resolve_model

    with pytest.raises(ConfigError, match="not a label of"):
        glotlid(glotlid_tiny, languages=["deu_latn"])
    lid176 = tmp_path / "lid176.ftz"
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), lid176)
    with pytest.raises(ConfigError, match="not a GlotLID model"):
        glotlid(lid176)
    with pytest.raises(ValueError, match=r"min_score\.deu_Latn"):
        LanguageParams(backend="glotlid", min_score={"deu_Latn": 1.5})


@pytest.mark.integration
def test_glotlid_from_the_hub_by_its_id(glotlid_tiny, tmp_path):
    """``model: OWNER/NAME`` with the glotlid backend: the repo's ``model.bin``, downloaded
    through huggingface_hub from the Hub stand-in, in a real ``refine run``."""
    from hubstub import HubStub

    texts, truth = corpus(seed=4, per_language=5)
    inp = tmp_path / "docs.parquet"
    pq.write_table(docs(texts).drop_columns(["source"]), inp)
    out = tmp_path / "out"
    cfg = write_config(
        tmp_path / "c.yaml",
        [str(inp)],
        out,
        "  - read: {}\n"
        "  - language: {backend: glotlid, model: acme/glotlid-tiny,"
        " languages: [deu_Latn, rus_Cyrl], min_score: {deu_Latn: 0.0, rus_Cyrl: 0.0}}\n",
    )
    with HubStub("hf_test_token") as hub:
        hub.add_files("acme/glotlid-tiny", {"model.bin": glotlid_tiny.read_bytes()})
        env = {
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": "hf_test_token",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_CACHE": str(tmp_path / "hub-cache"),
            "HF_HUB_OFFLINE": "0",
        }
        r = run_cli("run", str(cfg), "--workers", "1", "--no-progress", env=env, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert any("/resolve/" in path for _, path in hub.requests)
    kept = pq.read_table(out / "documents" / "01_language").sort_by("id")
    want = sorted(
        (f"d{i}", lang) for i, lang in enumerate(truth) if lang in ("deu_Latn", "rus_Cyrl")
    )
    assert list(zip(kept["id"].to_pylist(), kept["language"].to_pylist(), strict=True)) == want
    assert set(kept["language_script"].to_pylist()) == {"Latn", "Cyrl"}
