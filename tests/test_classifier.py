"""quality_classifier and train_quality: a real fastText bigram classifier trained on the CC sample.

Positives are the prose paragraphs (12+ words, ending a sentence) of the real CC sample's
documents; negatives are the same paragraphs with their words shuffled (same words, so only the
word bigrams tell them apart) plus navigation / footer boilerplate built from menu phrases. The
last documents of the sample are held out and never trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import re

import pyarrow as pa
import pytest
import xxhash
from support import require_shared_data

from refine.errors import ConfigError
from refine.filters.classifier import DCLM_MIN_SCORE, DCLM_QUALITY_MODEL, QualityClassifier
from refine.models import DEFAULT_LID_MODEL, fasttext_labels, fasttext_model
from refine.pipeline.stage import TEXT_HASH, text_hashes
from refine.training import split_prose, train_quality

SAMPLE = "text/cc-main-2019-30-en.jsonl.gz"
N_HELD_OUT = 60
MENU = [
    "Home", "About Us", "Contact", "Privacy Policy", "Terms of Use", "Sitemap", "Log in",
    "Register", "Forgot password?", "Share on Facebook", "Tweet", "Pin it", "Email", "Search",
    "Cart (0)", "Checkout", "My Account", "FAQ", "Careers", "Blog", "News", "Subscribe",
    "Follow us", "Cookie settings", "Accept", "Next", "Previous", "Back to top", "Read more",
    "Copyright © 2019 All Rights Reserved.", "Powered by WordPress", "Skip to content", "Menu",
]  # fmt: skip
BOILERPLATE = (
    "Home | About Us | Contact | Privacy Policy | Terms of Use | Sitemap\n"
    "Copyright © 2019 All Rights Reserved. Powered by WordPress\n"
    "Log in | Register | Forgot password? | Share on Facebook | Tweet | Pin it | Email"
)


def sample_docs() -> list[str]:
    path = require_shared_data() / SAMPLE
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [t for t in (json.loads(line).get("text") for line in f) if t]


def shuffle_words(text: str, seed: int) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def boilerplate(seed: int) -> str:
    rng = random.Random(seed)
    return "\n".join(
        " | ".join(rng.sample(MENU, rng.randint(3, 9))) for _ in range(rng.randint(1, 6))
    )


def write_jsonl(path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def data() -> dict:
    docs = sample_docs()
    train, held_out = docs[:-N_HELD_OUT], docs[-N_HELD_OUT:]
    positive = [p for p in paragraphs(train) if len(p.split()) >= 12]
    held = [p for p in paragraphs(held_out) if 40 <= len(p.split()) <= 120]
    clean = next(p for p in held if not re.search(r"[\d<>|@/]", p))
    return {
        "positive": positive,
        "negative": [shuffle_words(t, i) for i, t in enumerate(positive)]
        + [boilerplate(i) for i in range(1000)],
        "clean": clean,
        "shuffled": shuffle_words(clean, 0),
        "boilerplate": BOILERPLATE,
        "held_out": held,
    }


def paragraphs(texts: list[str]) -> list[str]:
    return [line.strip() for t in texts for line in t.split("\n") if line.strip()[-1:] in ".!?"]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[str, dict]:
    folder = tmp_path_factory.mktemp("clf")
    metrics = train_quality(
        write_jsonl(folder / "pos.jsonl", data["positive"]),
        write_jsonl(folder / "neg.jsonl", data["negative"]),
        str(folder / "clf.bin"),
        dim=32,
        bucket=100_000,
        epoch=25,
        lr=0.5,
        threads=1,
    )
    return metrics["model"], metrics


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


def stage(model: str, **params) -> QualityClassifier:
    s = QualityClassifier(QualityClassifier.Params(model=model, **params))
    s.check()
    return s


def test_train_quality_reports_held_out_precision_recall(trained):
    model, metrics = trained
    assert metrics["valid"]["__label__hq"] >= 300 and metrics["valid"]["__label__cc"] >= 500
    assert metrics["train"]["__label__hq"] > 3000
    # short shuffled paragraphs are hard for a model this small: measured 0.60 / 0.60
    assert metrics["precision"] >= 0.55 and metrics["recall"] >= 0.55, metrics
    assert stage(model).params.positive_label == "__label__hq"


def test_ranks_clean_over_shuffled_over_boilerplate(data, trained):
    model, _ = trained
    order = ["clean", "shuffled", "boilerplate"]
    res = stage(model, min_score=0.5).process(docs([data[k] for k in order]))
    res.stats.check_balance()
    score = dict(zip(order, res.log["quality_score"].to_pylist(), strict=True))
    assert sorted(score, key=score.get, reverse=True) == order, score
    assert res.log["reason"].to_pylist() == [None, "quality_low_score", "quality_low_score"], score
    assert res.log.schema.field("quality_score").type == pa.float32()
    # over every held-out paragraph, not only that one
    held = data["held_out"]
    s = stage(model)
    clean = s.process(docs(held)).log["quality_score"].to_pylist()
    junk = s.process(docs([shuffle_words(p, 1) for p in held])).log["quality_score"].to_pylist()
    assert sum(c > j for c, j in zip(clean, junk, strict=True)) >= 0.9 * len(held)  # 92%
    assert sum(c >= 0.5 for c in clean) >= 0.7 * len(held)  # 80%
    assert sum(j >= 0.5 for j in junk) <= 0.2 * len(held)  # 12%


def test_score_is_the_positive_label_probability(data, trained):
    model, _ = trained
    texts = [data["clean"], data["boilerplate"]]
    hq = stage(model).process(docs(texts)).log["quality_score"].to_pylist()
    cc = stage(model, positive_label="__label__cc").process(docs(texts)).log
    assert [a + b for a, b in zip(hq, cc["quality_score"].to_pylist(), strict=True)] == (
        pytest.approx([1.0, 1.0], abs=1e-4)
    )


def test_retune_min_score_reuses_scores(data, trained):
    model, _ = trained
    texts = [data["clean"], data["shuffled"], data["boilerplate"]]
    first = stage(model, min_score=0.0).process(docs(texts))
    assert first.log["kept"].to_pylist() == [True] * 3
    res = stage(model, min_score=0.99).process(docs(texts), previous=first.log)
    assert res.stats.counters["signals_reused"] == 3
    scores = first.log["quality_score"].to_pylist()
    assert res.log["kept"].to_pylist() == [s >= 0.99 for s in scores]


def test_hostile_documents_never_raise(trained):
    model, _ = trained
    hostile = [
        "",
        None,
        "\n\n\x00",
        "x" * 10_000_000,
        "中华人民共和国是一个位于东亚的国家。",
        "🙂" * 500,
    ]
    res = stage(model).process(docs(hostile))
    res.stats.check_balance()
    scores = res.log["quality_score"].to_pylist()
    assert all(s is not None and math.isfinite(s) and 0 <= s <= 1 for s in scores)


def test_bad_model_or_label_is_a_config_error(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ConfigError, match=str(tmp_path / "nope.bin")):
        stage(str(tmp_path / "nope.bin"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError, match="not a fastText model"):
        stage(str(junk))
    with pytest.raises(ConfigError, match="__label__good"):
        stage(model, positive_label="__label__good")


def test_dclm_default():
    params = QualityClassifier.Params()
    assert params.model == DCLM_QUALITY_MODEL and params.min_score == DCLM_MIN_SCORE


def test_score_equals_dclm_classify_fasttext_hq_prob(data, trained):
    """quality_score is what DCLM's enricher computes for the same text: its one-line form
    (`" ".join(content.strip().splitlines())`, so CR, NEL, U+2028 end lines too) and the
    __label__hq probability (1 - p when the top label is __label__cc)."""
    model, _ = trained
    ft = fasttext_model(model)
    clean = data["clean"]
    half = len(clean) // 2
    texts = [
        clean,
        BOILERPLATE,
        f"  {clean[:half]}\r\n{clean[half:]}\n\n",
        f"{clean[:half]}\u2028{clean[half:]}\x85Home | About Us | Contact",
        "Home\x1cAbout Us\x1dContact\x1eSitemap\rPrivacy Policy",
    ]

    def hq_prob(text: str) -> float:
        (label,), (p,) = ft.predict(text)
        return 1 - p if label == "__label__cc" else p

    def dclm(content: str) -> float:
        return hq_prob(" ".join(content.strip().splitlines()))

    scores = stage(model).process(docs(texts)).log["quality_score"].to_pylist()
    # DCLM's value can leave 0-1 by 1e-5 (fastText adds 1e-5 to probabilities): clipped here
    assert scores == pytest.approx([min(max(dclm(t), 0.0), 1.0) for t in texts], abs=1e-6)
    # the separators matter: joined differently, the last two texts would score differently
    glued = [hq_prob(t.replace("\n", " ")) for t in texts[3:]]
    assert all(g != pytest.approx(s, abs=1e-6) for g, s in zip(glued, scores[3:], strict=True))


def test_labels_are_read_from_the_file_without_loading_it(trained, tmp_path):
    model, _ = trained
    for spec in (model, DEFAULT_LID_MODEL):
        assert fasttext_labels(spec) == fasttext_model(spec).get_labels()
    head = tmp_path / "head.bin"
    with open(model, "rb") as f:
        head.write_bytes(f.read(200))  # magic, args and the first dictionary entries only
    with pytest.raises(ConfigError, match="truncated"):
        fasttext_labels(str(head))


def test_text_hash_is_xxh3_64_of_the_utf8_bytes():
    texts = ["Grüße aus Köln", "", None, "中华人民共和国", "🙂\x00x", "plain ascii"]

    def expected(t: str | None) -> int | None:
        if t is None:
            return None
        digest = xxhash.xxh3_64(t.encode("utf-8")).digest()  # canonical: big-endian
        return int.from_bytes(digest, "big", signed=True)

    want = [expected(t) for t in texts]
    for kind in (pa.string(), pa.large_string()):
        table = pa.table({"text": pa.chunked_array([texts[:2], texts[2:]], kind)})
        assert text_hashes(table).to_pylist() == want
    assert text_hashes(pa.table({"id": ["a"]})).to_pylist() == [None]
    assert TEXT_HASH == "xxh3_64"


def test_scores_saved_under_another_text_hash_are_recomputed(data, trained):
    """A decision log written before the switch to xxh3 (blake2b text hashes) gives no scores:
    every document is scored again, never matched against a hash of another algorithm."""
    model, _ = trained
    texts = [data["clean"], data["shuffled"], data["boilerplate"]]
    s = stage(model, min_score=0.5)
    fresh = s.process(docs(texts)).log
    planted = pa.array([0.25] * 3, pa.float32())  # a saved score the model would not give
    saved = fresh.set_column(fresh.column_names.index("quality_score"), "quality_score", planted)
    reused = s.process(docs(texts), previous=saved)
    assert reused.stats.counters["signals_reused"] == 3  # control: the same hashes are reused
    assert reused.log["quality_score"].to_pylist() == [0.25] * 3

    def blake2b(t: str) -> int:
        digest = hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little", signed=True)

    old = saved.set_column(
        saved.column_names.index("text_hash"), "text_hash", pa.array([blake2b(t) for t in texts])
    )
    res = s.process(docs(texts), previous=old)
    assert res.stats.counters["signals_reused"] == 0
    assert res.log["quality_score"].to_pylist() == fresh["quality_score"].to_pylist()


def test_split_prose_puts_every_line_on_one_side():
    doc = "\n".join(
        [
            "Home | About Us | Contact",
            "The committee met on Tuesday and agreed to publish the full report before the end "
            'of the month."',
            "A short sentence of only eleven words ends right here today.",
            "Twelve or more words but no final punctuation at the end of this line here",
            "",
            "She asked whether the bridge would reopen in spring, and nobody in the room "
            "could answer her (not even the engineer)!)",
        ]
    )
    prose, rest = split_prose([doc, "Menu\nLog in", ""])
    assert prose == [doc.split("\n")[1] + "\n" + doc.split("\n")[5]]
    assert rest == [
        "\n".join([doc.split("\n")[0], doc.split("\n")[2], doc.split("\n")[3]]),
        "Menu\nLog in",
    ]
    # on the real sample: the two sides hold exactly the non-empty lines, each once
    docs_ = sample_docs()
    prose, rest = split_prose(docs_)
    lines = sorted(line.strip() for t in docs_ for line in t.split("\n") if line.strip())
    assert sorted(line for d in prose + rest for line in d.split("\n")) == lines
    assert all(len(p.split()) >= 12 for d in prose for p in d.split("\n"))


def test_dclm_default_resolves_from_the_hub_cache_offline(trained, tmp_path, monkeypatch):
    """The default spec names DCLM's repo and file: a model placed where huggingface_hub caches
    mlfoundations/fasttext-oh-eli5's file is found with no network, and the stage runs with its
    defaults (positive label __label__hq, min_score 0.018112). With an empty cache and
    HF_HUB_OFFLINE set, the build-time check fails naming the spec."""
    import huggingface_hub.constants

    from refine.models import resolve_model

    model, _ = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    resolve_model.cache_clear()
    with pytest.raises(ConfigError, match="mlfoundations/fasttext-oh-eli5.*HF_HUB_OFFLINE"):
        QualityClassifier().check()

    cache = tmp_path / "hub"
    repo = cache / "models--mlfoundations--fasttext-oh-eli5"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin").symlink_to(model)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    resolve_model.cache_clear()
    try:
        s = QualityClassifier()
        s.check()
        assert set(fasttext_labels(s.params.model)) == {"__label__hq", "__label__cc"}
        log = s.process(docs([BOILERPLATE, "x"])).log
        scores = log["quality_score"].to_pylist()
        assert log["kept"].to_pylist() == [x >= DCLM_MIN_SCORE for x in scores]
    finally:
        resolve_model.cache_clear()
