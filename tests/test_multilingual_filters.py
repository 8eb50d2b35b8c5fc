"""Per-language settings of the heuristic filters (``languages:`` / ``unknown_language:``)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError
from support import run_cli, shared_data, write_config

from refine.filters.c4 import C4Quality
from refine.filters.fineweb import FineWebQuality
from refine.filters.gopher import GopherQuality, GopherRepetition
from refine.filters.languages import FINEWEB2_ASSET, NO_SETTINGS, fineweb2_table, resolve
from refine.filters.llama3 import Llama3Heuristics

#: German prose with German stop words (der, die, und, mit, von...) and none of the English ones.
GERMAN = (
    "Der Hund lief mit seinem Besitzer durch den Park und die Sonne schien hell. "
    "Die Kinder spielten im Sand, und der Wind wehte von den Bergen herunter. "
    "Am Abend kamen alle nach Hause und aßen zusammen mit der Familie zu Abend. "
    "Das Essen war gut, und die Gespräche dauerten bis spät in die Nacht hinein. "
    "Niemand wollte schlafen gehen, weil der Abend so schön war wie selten zuvor. "
)


def docs(texts: list[str], languages: list[str | None] | None) -> pa.Table:
    n = len(texts)
    cols = {
        "id": [f"d{i}" for i in range(n)],
        "url": [f"http://x/{i}" for i in range(n)],
        "text": pa.array(texts, pa.large_string()),
        "source": [f"f#{i}" for i in range(n)],
    }
    if languages is not None:
        cols["language"] = pa.array(languages, pa.string())
    return pa.table(cols)


def reasons(stage, table: pa.Table) -> list[str | None]:
    return stage.process(table).log["reason"].to_pylist()


# --- the shipped table -----------------------------------------------------------------------


def test_shipped_table_equals_fineweb2_configs():
    data = shared_data()
    if data is None:
        pytest.skip("REFINE_TEST_DATA (../shared/data) absent: FineWeb-2's configs not here")
    configs = {}
    for path in sorted((data / "fineweb2" / "configs").glob("*.yml")):
        with path.open(encoding="utf-8") as f:
            configs[path.stem] = yaml.safe_load(f)
    assert len(configs) == 20
    shipped = fineweb2_table()
    assert sorted(shipped) == sorted(configs)
    for label, config in configs.items():
        as_json = {
            k: [list(x) for x in v] if k.endswith("_grams") else v for k, v in config.items()
        }
        assert shipped[label] == as_json, label
    assert (FINEWEB2_ASSET.parent / "LICENSE").read_text().startswith(" " * 33 + "Apache License")


def test_document_languages_resolve_to_table_labels():
    keys = frozenset(fineweb2_table())
    assert resolve("de", keys) == "deu_Latn"  # lid.176
    assert resolve("deu_Latn", keys) == "deu_Latn"  # GlotLID
    assert resolve("zh", keys) == "cmn_Hani"  # macro-language: Mandarin, as FineWeb-2 labels it
    assert resolve("zho_Hans", keys) == "cmn_Hani"
    assert resolve("ar", keys) == "arb_Arab"
    assert resolve("ara_Arab", keys) == "arb_Arab"
    assert resolve("deu", keys) == "deu_Latn"
    assert resolve("hin_Latn", keys) is None  # another script is another language
    assert resolve("en", keys) is None  # FineWeb-2 has no English settings
    assert resolve("fi", keys) is None and resolve(None, keys) is None and resolve("", keys) is None


# --- per-language settings -------------------------------------------------------------------


def test_german_stop_words_used_for_german_pages():
    stage = GopherQuality(GopherQuality.Params(languages="fineweb2"))
    table = docs([GERMAN] * 4, ["de", "deu_Latn", "en", None])
    log = stage.process(table).log
    # German pages count FineWeb-2's German stop words (8 distinct: "im" among them, a word by
    # spaCy's German rules as datatrove splits it; the English rules split it "i" "m");
    # English / unlabelled ones the English list
    assert log["gopher_stop_words"].to_pylist()[:2] == [8, 8]
    assert log["gopher_stop_words"].to_pylist()[2:] == [0, 0]
    assert log["reason"].to_pylist() == [None, None] + ["gopher_enough_stop_words"] * 2
    # without a table every page is judged with the English list, as before
    plain = GopherQuality().process(table).log["reason"].to_pylist()
    assert plain == ["gopher_enough_stop_words"] * 4


def test_thresholds_applied_per_language_from_the_shipped_table():
    # 10 unique lines of 4 words and a full stop: 9 newlines / 50 words = 0.18 newlines per word.
    # FineWeb-2's new_line_ratio: deu 0.152, cmn 0.178 (below: dropped); fra 0.185 and the
    # stage's own 0.3 for English (above: kept).
    text = "\n".join(f"Zeile {i} hat Wörter." for i in range(10))
    stage = FineWebQuality(FineWebQuality.Params(short_line_thr=999, languages="fineweb2"))
    table = docs([text] * 5, ["de", "deu_Latn", "zh", "fr", "en"])
    log = stage.process(table).log
    assert log["fineweb_list_ratio"].to_pylist() == [pytest.approx(0.18)] * 5
    assert log["reason"].to_pylist() == ["list_ratio", "list_ratio", "list_ratio", None, None]


def test_inline_table_merges_over_the_shipped_one():
    # 10 lines, 2 repeating an earlier one: dup_line_frac 0.2, and no repeated word n-gram
    lines = ["Ende"] + [" ".join(f"w{i}x{j}" for j in range(8)) for i in range(7)] + ["Ende"] * 2
    text = "\n".join(lines)
    stage = GopherRepetition(
        GopherRepetition.Params(
            dup_para_frac=0,
            dup_line_char_frac=0,
            dup_para_char_frac=0,
            top_n_grams=((2, 0.9), (3, 0.9), (4, 0.9)),
            dup_n_grams=tuple((n, 0.9) for n in range(5, 11)),
            languages={"de": {"dup_line_frac": 0.1}, "pol_Latn": None},
        )
    )
    table = docs([text] * 4, ["de", "fr", "pl", "en"])
    log = stage.process(table).log
    assert log["gopher_rep_dup_line_frac"].to_pylist() == [pytest.approx(0.2)] * 4
    # de: the inline 0.1; fr: FineWeb-2's 0.264 (its n-gram values too, which this text passes);
    # pl: removed from the table, so the stage's own params (dup_line_frac 0.3) apply, as for en
    assert log["reason"].to_pylist() == ["dup_line_frac", None, None, None]
    # the German entry keeps FineWeb-2's other German values (here its stop words)
    quality = GopherQuality(GopherQuality.Params(languages={"de": {"max_avg_word_length": 20}}))
    log = quality.process(docs([GERMAN], ["de"])).log
    assert log["gopher_stop_words"].to_pylist() == [8] and log["reason"].to_pylist() == [None]


def test_language_without_settings_default_or_drop():
    texts = [GERMAN] * 4
    langs = ["de", "fi", None, "en"]
    by_default = GopherQuality(GopherQuality.Params(languages="fineweb2", stop_words=("der",)))
    # default: fi, null and en are judged by the stage's own params (one stop word: too few)
    assert reasons(by_default, docs(texts, langs)) == [None] + ["gopher_enough_stop_words"] * 3
    dropping = GopherQuality(
        GopherQuality.Params(languages="fineweb2", unknown_language="drop", min_stop_words=1)
    )
    assert reasons(dropping, docs(texts, langs)) == [None, NO_SETTINGS, NO_SETTINGS, NO_SETTINGS]
    # no language column at all: every document is without settings
    assert reasons(dropping, docs(texts[:2], None)) == [NO_SETTINGS] * 2
    # drop applies to every stage with a table
    fw = FineWebQuality(FineWebQuality.Params(languages="fineweb2", unknown_language="drop"))
    assert reasons(fw, docs(texts[:2], ["es", "fi"]))[1] == NO_SETTINGS


def test_c4_and_llama3_take_thresholds_per_language():
    text = "This is one sentence. This is another one. And a third one here."
    c4 = C4Quality(C4Quality.Params(languages={"de": {"min_num_sentences": 3}}))
    assert reasons(c4, docs([text] * 2, ["de", "en"])) == [None, "too_few_sentences"]
    repeated = "the same words again and again " * 20
    llama = Llama3Heuristics(
        Llama3Heuristics.Params(
            max_dirty_words=None, languages={"es": {"max_dup_ngram_coverage": None}}
        )
    )
    assert reasons(llama, docs([repeated] * 2, ["es", "en"])) == [None, "llama3_dup_ngrams"]


def test_mistakes_in_the_table_fail_when_the_params_are_built():
    with pytest.raises(ValidationError, match="cannot be set per language"):
        GopherRepetition.Params(languages={"de": {"stopwords": ["der"]}})
    with pytest.raises(ValidationError, match="unknown table"):
        FineWebQuality.Params(languages="fineweb3")
    with pytest.raises(ValidationError, match="languages.deu_Latn"):
        GopherQuality.Params(languages={"de": {"min_stop_words": "many"}})
    with pytest.raises(ValidationError, match=r"n = \[11\] not in the stage's dup_n_grams"):
        GopherRepetition.Params(languages={"de": {"dup_n_grams": [[11, 0.1]]}})
    with pytest.raises(ValidationError):
        GopherQuality.Params(unknown_language="skip")


def test_english_decisions_unchanged_by_a_language_table():
    english = GERMAN.replace("der", "the").replace("und", "and") + " " + GERMAN
    texts = [english, "too short", "word " * 80, GERMAN]
    table = docs(texts, ["en"] * 4)
    for cls in (GopherQuality, GopherRepetition, FineWebQuality):
        plain = cls().process(table).log
        tabled = cls(cls.Params(languages="fineweb2")).process(table).log
        assert plain["reason"].to_pylist() == tabled["reason"].to_pylist(), cls.name
        assert plain.drop_columns(["reason"]).equals(tabled.drop_columns(["reason"])), cls.name


def test_retuning_a_language_threshold_keeps_the_saved_signals():
    base = GopherQuality(GopherQuality.Params(languages="fineweb2"))
    retuned = GopherQuality(
        GopherQuality.Params(languages={"deu_Latn": {"max_avg_word_length": 12}})
    )
    other_words = GopherQuality(
        GopherQuality.Params(languages={"deu_Latn": {"stopwords": ["und", "oder"]}})
    )
    assert "languages" in GopherQuality.thresholds
    assert retuned.score_fingerprint() == base.score_fingerprint()
    assert other_words.score_fingerprint() != base.score_fingerprint()
    assert base.fingerprint() != retuned.fingerprint()
    # the saved signals decide the re-tuned run without recomputing them
    table = docs([GERMAN], ["de"])
    first = base.process(table)
    again = retuned.process(table, previous=first.log)
    assert again.stats.counters["signals_reused"] == 1
    assert again.log["gopher_stop_words"].to_pylist() == first.log["gopher_stop_words"].to_pylist()


# --- through the CLI -------------------------------------------------------------------------


def test_cli_runs_a_language_table_from_yaml(tmp_path):
    rows = [
        {"id": "de1", "text": GERMAN, "language": "de"},
        {"id": "de2", "text": GERMAN, "language": "deu_Latn"},
        {"id": "en1", "text": GERMAN, "language": "en"},
    ]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "out"
    stages = (
        "  - read: {}\n"
        "  - gopher_quality: {languages: fineweb2, unknown_language: drop}\n"
        "  - fineweb: {languages: {de: {new_line_ratio: 0.2}}, short_line_thr: 999}\n"
    )
    config = write_config(tmp_path / "run.yaml", [str(source)], out, stages)
    proc = run_cli("run", str(config), "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = pq.read_table(next((out / "stages").glob("*_gopher_quality"))).sort_by("id")
    assert log["id"].to_pylist() == ["de1", "de2", "en1"]
    assert log["reason"].to_pylist() == [None, None, NO_SETTINGS]
    assert log["gopher_stop_words"].to_pylist()[:2] == [8, 8]

    bad = write_config(
        tmp_path / "bad.yaml",
        [str(source)],
        tmp_path / "bad",
        "  - read: {}\n  - fineweb: {languages: {de: {stop_chars: ['.']}}}\n",
    )
    proc = run_cli("run", str(bad), "--no-progress", "--workers", "1")
    assert proc.returncode != 0
    assert "stop_chars cannot be set per language" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fingerprints_without_a_table_name_the_word_rules():
    # a labelled document's words follow its language's rules with or without a table, so an
    # output made when every label got the English rules is recomputed on resume, not mixed in
    from refine.filters.languages import _word_rules
    from refine.pipeline.stage import _digest

    for cls in (GopherRepetition, GopherQuality, FineWebQuality, C4Quality, Llama3Heuristics):
        stage = cls()
        dumped = stage.params.model_dump(mode="json")
        old = {k: v for k, v in dumped.items() if k not in ("languages", "unknown_language")}
        assert stage.fingerprint() != _digest({"name": cls.name, "params": old}), cls.name
        now = {**old, "word_rules": _word_rules()}
        assert stage.fingerprint() == _digest({"name": cls.name, "params": now}), cls.name
        assert "spacy==" in _word_rules() and "datatrove==" in _word_rules()
        assert cls(cls.Params(languages="fineweb2")).fingerprint() != stage.fingerprint()
