"""refine's per-language heuristic decisions against datatrove 0.10.1 run as FineWeb-2 runs it.

Reads the WARCs with refine's own reader and extractor, identifies each page's language with
refine's ``language`` stage (lid.176), and keeps the non-English pages whose language has
FineWeb-2 settings (lid codes are mapped to FineWeb-2's GlotLID labels: ``de`` -> ``deu_Latn``).
Every such page then goes through datatrove's three filters configured exactly as
``fineweb-2-pipeline.py`` (huggingface/fineweb-2) configures them, with ``language=`` set:

- ``GopherRepetitionFilter(dup_para_frac=0, dup_line_char_frac=0, dup_para_char_frac=0,
  dup_line_frac, top_n_grams, dup_n_grams)``,
- ``FineWebQualityFilter(short_line_thr=999, char_duplicates_ratio=0.1, line_punct_thr,
  new_line_ratio)``,
- ``GopherQualityFilter(max_avg_word_length, min_avg_word_length, stop_words,
  max_non_alpha_words_ratio, min_stop_words=2)``,

and through refine's ``gopher_repetition`` / ``fineweb`` / ``gopher_quality`` stages with the same
pipeline-level settings and ``languages: fineweb2``. Each stage is compared on every page (not
only on the pages the previous filter kept). Prints one JSON line:
``{"languages": {"deu_Latn": {"pages": N, "agreement": {"gopher_repetition": x, ...},
"disagreements": {...}}, ...}, "ok": bool, ...}``; ``ok`` says whether every language with at least
``--min-pages`` pages agrees on at least ``--target`` of its pages per stage.

    .venv/bin/python scripts/parity_fineweb2.py --input ../shared/data/warc/*.warc.gz --json
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from refine.filters import words as W
from refine.filters.fineweb import FineWebQuality
from refine.filters.gopher import GopherQuality, GopherRepetition
from refine.filters.languages import fineweb2_table, resolve

STAGES = ("gopher_repetition", "fineweb", "gopher_quality")


def read_documents(paths: list[str]) -> pa.Table:
    """The documents refine extracts from the WARCs, with lid.176's ``language`` column."""
    from refine.extract.stages import Extract, ReadWarc
    from refine.filters.language import LanguageFilter

    reader, extract = ReadWarc(), Extract()
    tables = []
    for part in reader.plan(reader.resolve_inputs(paths)):
        tables.append(extract.process(reader.read(part).table).table)
    docs = pa.concat_tables(tables, promote_options="default")
    docs = docs.select([c for c in ("id", "url", "text", "source") if c in docs.column_names])
    lid = LanguageFilter(LanguageFilter.Params(languages=None, min_score=0))
    signals = lid.score(docs)
    return docs.append_column("language", signals["language"]).append_column(
        "language_score", signals["language_score"]
    )


def refine_stages() -> dict[str, object]:
    """refine's stages with FineWeb-2's pipeline-level settings and its per-language table."""
    return {
        "gopher_repetition": GopherRepetition(
            GopherRepetition.Params(
                dup_para_frac=0, dup_line_char_frac=0, dup_para_char_frac=0, languages="fineweb2"
            )
        ),
        "fineweb": FineWebQuality(
            FineWebQuality.Params(
                short_line_thr=999, char_duplicates_ratio=0.1, languages="fineweb2"
            )
        ),
        "gopher_quality": GopherQuality(
            GopherQuality.Params(min_stop_words=2, languages="fineweb2")
        ),
    }


def datatrove_filters(label: str, cfg: dict) -> dict[str, object]:
    """datatrove's filters as ``fineweb-2-pipeline.py`` builds them for one language."""
    from datatrove.pipeline.filters import (
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_repetition": GopherRepetitionFilter(
            language=label,
            dup_para_frac=0,
            dup_line_char_frac=0,
            dup_para_char_frac=0,
            dup_line_frac=cfg["dup_line_frac"],
            top_n_grams=cfg["top_n_grams"],
            dup_n_grams=cfg["dup_n_grams"],
        ),
        "fineweb": FineWebQualityFilter(
            language=label,
            short_line_thr=999,
            char_duplicates_ratio=0.1,
            line_punct_thr=cfg["line_punct_thr"],
            new_line_ratio=cfg["new_line_ratio"],
        ),
        "gopher_quality": GopherQualityFilter(
            language=label,
            max_avg_word_length=cfg["max_avg_word_length"],
            min_avg_word_length=cfg["min_avg_word_length"],
            stop_words=cfg["stopwords"],
            max_non_alpha_words_ratio=cfg["max_non_alpha_words_ratio"],
            min_stop_words=2,
        ),
    }


def tokenizer_problem(label: str) -> str | None:
    """Why datatrove cannot split this language's words here (a missing package), or None."""
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    try:
        load_word_tokenizer(label).word_tokenize("test")
    except Exception as e:  # ImportError, or the tokenizer's own missing data
        return f"{type(e).__name__}: {e}"
    return None


def datatrove_words(texts: list[str], labels: list[str]) -> pa.Array:
    """Each text split by datatrove's word tokenizer for its language (as a ``_words`` column),
    to tell word-splitting differences from rule differences."""
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    words = []
    for text, label in zip(texts, labels, strict=True):
        try:
            words.append(load_word_tokenizer(label).word_tokenize(text))
        except ImportError:
            words.append(W.split_words(text))
    return pa.array(words, W.WORDS_TYPE)


def compare(docs: pa.Table, examples: int, their_words: bool = False) -> dict:
    table = fineweb2_table()
    keys = frozenset(table)
    codes = docs["language"].to_pylist()
    labels = [None if c == "en" else resolve(c, keys) for c in codes]
    rows = [i for i, lab in enumerate(labels) if lab is not None]
    sub = docs.take(pa.array(rows, pa.int64()))
    if their_words:
        words = datatrove_words(sub["text"].to_pylist(), [labels[i] for i in rows])
        sub = sub.append_column(W.WORDS_COLUMN, words)
    ours = {}
    for name, stage in refine_stages().items():
        log = stage.process(sub).log
        ours[name] = list(zip(log["kept"].to_pylist(), log["reason"].to_pylist(), strict=True))
        signals = [c for c in log.column_names if c.startswith(("gopher", "fineweb"))]
        ours[name + "_signals"] = log.select(signals).to_pylist()
    from datatrove.data import Document

    by_label: dict[str, list[int]] = defaultdict(list)
    for j, i in enumerate(rows):
        by_label[labels[i]].append(j)
    texts = sub["text"].to_pylist()
    ids = sub["id"].to_pylist()
    urls = sub["url"].to_pylist()
    out: dict[str, dict] = {}
    for label, js in sorted(by_label.items()):
        entry: dict = {"pages": len(js), "lid_codes": sorted({codes[rows[j]] for j in js})}
        problem = tokenizer_problem(label)
        if problem:
            entry["skipped"] = problem
            out[label] = entry
            continue
        filters = datatrove_filters(label, table[label])
        agreement, disagreements = {}, {}
        for name in STAGES:
            same, diffs = 0, []
            for j in js:
                result = filters[name].filter(Document(text=texts[j], id=ids[j]))
                theirs = (True, None) if result is True else (False, result[1])
                kept, reason = ours[name][j]
                if kept == theirs[0]:
                    same += 1
                elif len(diffs) < examples:
                    diffs.append(
                        {
                            "url": urls[j],
                            "refine": reason or "kept",
                            "datatrove": theirs[1] or "kept",
                            "signals": ours[name + "_signals"][j],
                        }
                    )
            agreement[name] = round(same / len(js), 4)
            if diffs:
                disagreements[name] = diffs
        entry["agreement"] = agreement
        if disagreements:
            entry["disagreements"] = disagreements
        out[label] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", nargs="+", required=True, help="WARC files or globs")
    parser.add_argument("--json", action="store_true", help="print one JSON line (the default)")
    parser.add_argument("--min-pages", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--examples", type=int, default=5, help="disagreements listed per stage")
    parser.add_argument(
        "--datatrove-words",
        action="store_true",
        help="diagnosis: give refine's stages the words of datatrove's per-language tokenizer "
        "instead of refine's own (what is left then is not word splitting)",
    )
    args = parser.parse_args()
    paths = sorted({p for pattern in args.input for p in (glob.glob(pattern) or [pattern])})
    t0 = time.perf_counter()
    docs = read_documents(paths)
    languages = compare(docs, args.examples, args.datatrove_words)
    judged = {
        k: v for k, v in languages.items() if v["pages"] >= args.min_pages and "agreement" in v
    }
    ok = all(x >= args.target for v in judged.values() for x in v["agreement"].values())
    ok = ok and not any("skipped" in v for v in languages.values() if v["pages"] >= args.min_pages)
    english = int(pc.sum(pc.equal(docs["language"], "en")).as_py() or 0)
    result = {
        "languages": languages,
        "documents": docs.num_rows,
        "english": english,
        "words": "datatrove" if args.datatrove_words else "refine",
        "min_pages": args.min_pages,
        "target": args.target,
        "ok": ok,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, ensure_ascii=False))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
