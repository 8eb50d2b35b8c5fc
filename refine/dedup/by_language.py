"""``by: language`` on the dedup stages: documents deduplicate only against documents of the same
language, as FineWeb-2 does (it deduplicates each language's documents separately).

Each stage folds the document's language into the key it groups by (the URL or text key of
``dedup_url`` / ``dedup_exact``, the LSH bucket of ``dedup_minhash``, the line hash of
``dedup_lines``), so two documents of different languages never share a key and nothing else
in the stage changes: the same shuffles, the same survivor rules, within each language.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from refine.errors import ConfigError

#: ``all``: every document against every other; ``language``: within each language only
DedupBy = Literal["all", "language"]
#: the column ``by: language`` groups by (the ``language`` stage writes it)
LANGUAGE_COLUMN = "language"


def read_languages(part: str, stage: str) -> pa.Array:
    """The ``language`` column of the part file ``part`` (nulls as ""); ``ConfigError`` naming
    the part and the stage when the documents have no such column."""
    if LANGUAGE_COLUMN not in pq.read_schema(part).names:
        raise ConfigError(
            f"{stage}: by: language, but {part} has no {LANGUAGE_COLUMN!r} column (put the "
            "'language' stage before it, or read an input that has that field)"
        )
    return languages_of(pq.read_table(part, columns=[LANGUAGE_COLUMN])[LANGUAGE_COLUMN])


def languages_of(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A language column as one string array, nulls as ""."""
    langs = pc.fill_null(pc.cast(column, pa.string()), "")
    return langs.combine_chunks() if isinstance(langs, pa.ChunkedArray) else langs


def language_hashes(langs: pa.Array) -> np.ndarray:
    """A signed 64-bit xxh3 of each row's language label (UTF-8), computed once per distinct
    label: the value a stage mixes into its integer keys."""
    encoded = langs.dictionary_encode()
    per_label = np.array(
        [
            xxhash.xxh3_64_intdigest(label.encode("utf-8", "surrogatepass"))
            for label in encoded.dictionary.to_pylist()
        ],
        np.uint64,
    ).view(np.int64)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return per_label[codes] if codes.size else np.zeros(0, np.int64)
