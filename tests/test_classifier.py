"""quality_classifier and train_quality: a real fastText bigram classifier trained on the CC sample.

Positives are the prose paragraphs (12+ words, ending a sentence) of the real CC sample's
documents; negatives are the same paragraphs with their words shuffled (same words, so only the
word bigrams tell them apart) plus navigation / footer boilerplate built from menu phrases. The
last documents of the sample are held out and never trained on.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re

import pyarrow as pa
import pytest
from support import require_shared_data

from refine.errors import ConfigError
from refine.filters.classifier import DCLM_MIN_SCORE, DCLM_QUALITY_MODEL, QualityClassifier
from refine.training import train_quality

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
