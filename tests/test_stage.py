"""The stage base classes own the bookkeeping: counts, reasons and the decision log."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from refine.pipeline.runner import plan_segments
from refine.pipeline.stage import FilterStage, GlobalStage, MapStage, SourceStage, StageParams
from refine.pipeline.stats import StageStats, merge_stats


class MinWords(FilterStage):
    """A filter as later issues write them: a score column and a threshold."""

    name = "min_words"
    thresholds = frozenset({"min_words"})
    scored = 0  # documents scored, to show when saved signals are reused

    class Params(StageParams):
        min_words: int = 3

    def score(self, table):
        MinWords.scored += table.num_rows
        words = pc.count_substring_regex(table["text"], r"\S+")
        return {"n_words": words}

    def decide(self, table):
        too_short = pc.less(table["n_words"], self.params.min_words)
        return pc.if_else(too_short, pa.scalar("too_few_words"), pa.scalar(None, pa.string()))

    def signal_names(self, table):
        return ["n_words"]


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


def test_filter_stage_keeps_scores_and_logs_every_decision():
    res = MinWords().process(docs(["one two three", "short", "a b c d", "", "x y"]))
    assert res.table["id"].to_pylist() == ["d0", "d2"]
    assert res.table["n_words"].to_pylist() == [3, 4]  # the signal travels with the documents
    log = res.log
    assert log["kept"].to_pylist() == [True, False, True, False, False]
    assert log["reason"].to_pylist() == [
        None,
        "too_few_words",
        None,
        "too_few_words",
        "too_few_words",
    ]
    assert log["n_words"].to_pylist() == [3, 1, 4, 0, 2]
    s = res.stats
    assert (s.docs_in, s.docs_out, dict(s.dropped)) == (5, 2, {"too_few_words": 3})
    assert s.bytes_in == len("one two threeshorta b c dx y") and s.bytes_out == len(
        "one two threea b c d"
    )
    s.check_balance()


def test_filter_threshold_is_config():
    res = MinWords(MinWords.Params(min_words=1)).process(docs(["one", ""]))
    assert res.table["id"].to_pylist() == ["d0"]


def test_stats_merge_and_json_round_trip():
    a = StageStats("s", docs_in=3, docs_out=2, bytes_in=30, bytes_out=20, parts=1)
    a.drop("short")
    b = StageStats("s", docs_in=4, docs_out=1, parts=1)
    b.drop("short", 2)
    b.drop("junk")
    b.error("junk", "f.warc.gz#10", "bad")
    m = merge_stats([a, b])
    assert (m.docs_in, m.docs_out, m.parts) == (7, 3, 2)
    assert dict(m.dropped) == {"short": 3, "junk": 1}
    m.check_balance()
    again = StageStats.from_dict(m.to_dict())
    assert again.to_dict() == m.to_dict()
    assert m.to_dict()["keep_rate"] == 3 / 7


class Src(SourceStage):
    name = "src"


class Extractish(MapStage):
    name = "ex"
    checkpoint = True


class Glob(GlobalStage):
    name = "glob"


def test_segments_fuse_map_stages_and_checkpoint_at_the_right_places():
    segs = plan_segments([Src(), Extractish(), MinWords(), MinWords(), Glob(), MinWords()])
    assert [(s.kind, s.key, [f for f, _ in s.stages]) for s in segs] == [
        ("map", "01_ex", ["00_src", "01_ex"]),
        ("map", "03_min_words", ["02_min_words", "03_min_words"]),
        ("global", "04_glob", ["04_glob"]),
        ("map", "05_min_words", ["05_min_words"]),
    ]
    assert [s.input_key for s in segs] == [None, "01_ex", "03_min_words", "04_glob"]


def test_changing_a_later_stage_keeps_earlier_fingerprints():
    a = plan_segments([Src(), Extractish(), MinWords()])
    b = plan_segments([Src(), Extractish(), MinWords(MinWords.Params(min_words=9))])
    assert a[0].fingerprint == b[0].fingerprint
    assert a[1].fingerprint != b[1].fingerprint
    c = plan_segments([Src(), Extractish(), MinWords()], source_salt="other inputs")
    assert c[0].fingerprint != a[0].fingerprint and c[1].fingerprint != a[1].fingerprint


def test_saved_signals_are_reused_for_unchanged_text_only():
    first = MinWords().process(docs(["one two three", "short", "a b c d"]))
    MinWords.scored = 0
    changed = docs(["one two three", "now a longer text", "a b c d", "new document here"])
    changed = changed.set_column(0, "id", pa.array(["d0", "d1", "d2", "d9"]))
    res = MinWords(MinWords.Params(min_words=4)).process(changed, previous=first.log)
    assert MinWords.scored == 2  # d1's text changed and d9 is new; d0 and d2 come from the log
    assert res.stats.counters["signals_reused"] == 2
    assert res.log["n_words"].to_pylist() == [3, 4, 4, 3]
    assert res.table["id"].to_pylist() == ["d1", "d2"]


def test_a_model_replaced_under_the_same_path_changes_the_fingerprints(tmp_path):
    """A filter's model file is part of its identity: retrained or replaced at the same path, the
    stage recomputes (fingerprint and score fingerprint change); copied or touched, it resumes."""
    import os
    import shutil

    from refine.filters.language import LanguageFilter
    from refine.models import DEFAULT_LID_MODEL, resolve_model
    from refine.pipeline.stage import _digest

    lid = resolve_model(DEFAULT_LID_MODEL)
    model = tmp_path / "lid.ftz"
    shutil.copy(lid, model)
    stage = LanguageFilter(LanguageFilter.Params(model=str(model)))
    fp, score_fp = stage.fingerprint(), stage.score_fingerprint()
    # the file under another path, or touched: same content, same fingerprints
    copy = tmp_path / "copy" / "lid.ftz"
    copy.parent.mkdir()
    shutil.copy(model, copy)
    os.utime(model, ns=(1, 1))
    assert stage.fingerprint() == fp and stage.score_fingerprint() == score_fp
    moved = LanguageFilter(LanguageFilter.Params(model=str(copy)))
    assert moved.model_files() == stage.model_files()
    # the same path, other content (one byte in the middle of the file, same size)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    assert stage.fingerprint() != fp and stage.score_fingerprint() != score_fp
    # a stage without models keeps the fingerprint earlier versions computed
    s = MinWords()
    assert s.model_params == () and s.model_files() == {}
    assert s.fingerprint() == _digest({"name": s.name, "params": s.params.model_dump(mode="json")})


def test_extract_fingerprint_names_the_prefilter_model_only_when_it_is_on():
    from refine.extract.stages import Extract

    assert Extract().model_files() == {}
    on = Extract(Extract.Params(prefilter_languages=["en"]))
    assert set(on.model_files()) == {"prefilter_model"}


def test_extreme_counters_are_not_summed_across_parts():
    a = StageStats(
        name="s",
        counters=Counter(
            {"lines_removed": 3, "max_rows_per_line_key": 7, "cc_converged": 1, "cc_iterations": 4}
        ),
    )
    b = StageStats(
        name="s",
        counters=Counter({"lines_removed": 2, "max_rows_per_line_key": 5, "cc_converged": 0}),
    )
    total = merge_stats([a, b, StageStats(name="s")]).counters
    assert total == {
        "lines_removed": 5,
        "max_rows_per_line_key": 7,
        "cc_converged": 0,
        "cc_iterations": 4,
    }
    # zero values survive (Counter addition would drop them)
    assert (b + StageStats(name="s")).counters["cc_converged"] == 0
