"""The documents schema every source gives later stages (DESIGN.md), and the pages schema that
``read`` hands to ``extract`` for WARC input."""

from __future__ import annotations

import pyarrow as pa

#: The documents schema after extraction (or from a text reader); later stages add signal
#: columns, and a text reader adds the input's other fields as metadata columns.
DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("date", pa.timestamp("us", tz="UTC")),
        ("text", pa.large_string()),
        ("source", pa.string()),
    ]
)

#: What ``read`` hands to ``extract``: the raw page and the charset its HTTP headers declared.
PAGE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("date", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
        ("html", pa.large_binary()),
        ("charset", pa.string()),
    ]
)
