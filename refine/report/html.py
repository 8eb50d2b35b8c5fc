"""``refine report OUT --html FILE``: one self-contained HTML page about a finished run.

Every number printed comes from report.json; the decision logs and document checkpoints give the
histograms, the language distribution and the dedup examples. Charts are inline SVG (no script,
no network). Logs are read column by column and sampled (``data.MAX_SAMPLE_ROWS``), so the page
stays small for a run of any size.
"""

from __future__ import annotations

import datetime
import json
from html import escape
from pathlib import Path
from typing import Any

import yaml

from refine.errors import RefineError
from refine.report import data, plots
from refine.report.thresholds import thresholds_for

#: Characters of each document shown in a dedup example.
EXAMPLE_CHARS = 1200
#: Characters of each removed line shown in a dedup_lines example.
LINE_CHARS = 200
#: Input files listed by name (a crawl id expands to thousands).
MAX_INPUTS_LISTED = 30

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
 margin:0 auto;max-width:1240px;padding:16px 28px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:30px 0 8px;
 border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.facts{color:#555}.note{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 9px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f6f6f6}td.l,th.l{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:14px}
figure{margin:0;border:1px solid #eee;border-radius:4px;padding:6px}
figcaption{font-size:12px;color:#555;margin-top:2px}
svg{max-width:100%;height:auto}.row>figure.half{flex:1 1 520px}.half svg{width:100%}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin-bottom:14px}
pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;border:1px solid #eee;
 padding:8px;font-size:12px;max-height:320px;overflow:auto;margin:2px 0}
code{font-size:12px}
"""


def render_html(output_dir: str | Path, html_path: str | Path) -> Path:
    """Write the report of the finished run in ``output_dir`` to ``html_path``; returns the path.

    Raises RefineError when ``output_dir`` has no report.json.
    """
    output = Path(output_dir)
    path = output / "report.json"
    if not path.is_file():
        raise RefineError(f"{path}: no report here (has `refine run` finished on this output?)")
    page = html_page(output, json.loads(path.read_text(encoding="utf-8")))
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    return html_path


def html_page(output_dir: str | Path, report: dict) -> str:
    """The page of ``report`` (the run's report.json, or a copy edited for publishing) with the
    samples its sections read from the run's checkpoints in ``output_dir``."""
    output = Path(output_dir)
    stages = report.get("stages", [])
    configs = _stage_configs(report)
    body = [
        _header(report),
        _funnel_section(stages),
        _stage_table(report),
        _reasons_section(stages),
        _signals_section(output, stages, configs),
        _language_section(output, stages),
        _dedup_section(output, stages),
        _contamination_section(output, stages),
        _facts_section(report),
    ]
    title = f"refine report: {escape(str(report.get('output', output)))}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )


def _stage_configs(report: dict) -> list[dict[str, Any] | None]:
    """Each report stage's params as the config gave them (by position, checked by name)."""
    entries = report.get("config", {}).get("stages", [])
    out = []
    for i, stage in enumerate(report.get("stages", [])):
        given = None
        if i < len(entries) and isinstance(entries[i], dict) and stage["name"] in entries[i]:
            given = entries[i][stage["name"]] or {}
        else:
            for entry in entries:
                if isinstance(entry, dict) and stage["name"] in entry:
                    given = entry[stage["name"]] or {}
                    break
        out.append(given)
    return out


def _int(n: int) -> str:
    return f"{n:,}"


def _keep(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def _td(value: Any, text: str, stage: str, field_name: str, cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    return (
        f'<td{attrs} data-stage="{escape(stage)}" data-field="{field_name}" '
        f'data-value="{escape(json.dumps(value))}">{escape(text)}</td>'
    )


def _header(report: dict) -> str:
    stages = report.get("stages", [])
    first, last = (stages[0], stages[-1]) if stages else ({}, {})
    status = "complete" if report.get("complete") else "INCOMPLETE"
    cluster = report.get("cluster", {})
    return (
        f"<h1>refine run report</h1>"
        f'<p class="facts"><code>{escape(str(report.get("output", "")))}</code> · refine '
        f"{escape(str(report.get('refine_version', '?')))} · {status} · started "
        f"{escape(str(report.get('started_at', '?')))} · wall "
        f'<span data-field="wall_seconds">{report.get("wall_seconds", 0):,.1f}</span> s · '
        f"{cluster.get('workers', '?')} workers · "
        f'<span data-field="docs_first">{_int(first.get("docs_in", 0))}</span> documents in, '
        f'<span data-field="docs_last">{_int(last.get("docs_out", 0))}</span> out</p>'
    )


def _funnel_section(stages: list[dict]) -> str:
    if not stages:
        return ""
    labels = [s["folder"] for s in stages]
    docs = plots.funnel(
        labels, [s["docs_out"] for s in stages], stages[0]["docs_in"], "docs", "funnel-docs"
    )
    # Bytes are HTML up to extraction's input and text after it: the byte funnel starts at the
    # text extraction produced, and the HTML -> text step is stated in words.
    start = next((i for i, s in enumerate(stages) if s["name"] == "extract"), None)
    if start is None:
        base_stages, base = stages, stages[0]["bytes_in"]
        caption = "bytes as each stage counts them"
    else:
        ex = stages[start]
        base_stages, base = stages[start:], ex["bytes_out"]
        caption = (
            f"extraction turned {_mb(ex['bytes_in'])} MB of HTML into {_mb(ex['bytes_out'])} MB "
            f"of text ({_pct(ex['bytes_out'], ex['bytes_in'])}); the chart starts from that text"
        )
    size = plots.funnel(
        [s["folder"] for s in base_stages],
        [s["bytes_out"] for s in base_stages],
        base,
        "bytes",
        "funnel-bytes",
    )
    return (
        "<h2>Keep-rate funnel</h2>"
        '<p class="note">Share of the input remaining after each stage, in pipeline order '
        "(as RefinedWeb's figure 2).</p>"
        '<div class="row">'
        f'<figure class="half" data-chart="funnel-docs">{docs}<figcaption>documents (of '
        f"{_int(stages[0]['docs_in'])} WARC responses read)</figcaption></figure>"
        f'<figure class="half" data-chart="funnel-bytes">{size}<figcaption>UTF-8 bytes of text; '
        f"{escape(caption)}</figcaption></figure></div>"
    )


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _stage_table(report: dict) -> str:
    rows = []
    for s in report.get("stages", []):
        f = s["folder"]
        dropped = sum(s.get("dropped", {}).values())
        rate = s["docs_in"] / s["seconds"] if s.get("seconds") else None
        rows.append(
            "<tr>"
            f'<td class="l">{escape(f)}</td><td class="l">{escape(s.get("kind", ""))}</td>'
            + _td(s["docs_in"], _int(s["docs_in"]), f, "docs_in")
            + _td(s["docs_out"], _int(s["docs_out"]), f, "docs_out")
            + _td(dropped, _int(dropped), f, "dropped_total")
            + _td(s["keep_rate"], _keep(s["keep_rate"]), f, "keep_rate")
            + _td(s["bytes_in"], _mb(s["bytes_in"]), f, "bytes_in")
            + _td(s["bytes_out"], _mb(s["bytes_out"]), f, "bytes_out")
            + _td(s.get("seconds", 0), f"{s.get('seconds', 0):,.1f}", f, "seconds")
            + _td(s.get("cpu_seconds", 0), f"{s.get('cpu_seconds', 0):,.1f}", f, "cpu_seconds")
            + _td(s.get("parts", 0), _int(s.get("parts", 0)), f, "parts")
            + _td(rate, "-" if rate is None else f"{rate:,.1f}", f, "docs_per_worker_second")
            + "</tr>"
        )
    wall = report.get("wall_seconds")
    stages = report.get("stages", [])
    overall = ""
    if wall and stages:
        overall = (
            f'<p class="note">Whole run: <span data-field="docs_per_second">'
            f"{stages[0]['docs_in'] / wall:,.1f}</span> documents read per wall second "
            f"({_int(stages[0]['docs_in'])} in {wall:,.1f} s). Per stage only worker-seconds "
            "(summed over parts) are recorded, not wall time; docs/worker-s is docs in divided "
            "by them.</p>"
        )
    head = (
        '<tr><th class="l">stage</th><th class="l">kind</th><th>docs in</th><th>docs out</th>'
        "<th>dropped</th><th>keep</th><th>MB in</th><th>MB out</th><th>worker s</th>"
        "<th>CPU s</th><th>parts</th><th>docs / worker-s</th></tr>"
    )
    return (
        "<h2>Stages</h2>"
        f'<table id="stages">{head}{"".join(rows)}</table>{overall}'
        '<p class="note">MB are 10<sup>6</sup> UTF-8 bytes of HTML for <code>read</code> and '
        "extraction's input, of text after that.</p>"
    )


def _reasons_section(stages: list[dict]) -> str:
    cards = []
    for s in stages:
        reasons = s.get("dropped") or {}
        if not reasons:
            continue
        key = f"drops-{s['folder']}"
        svg = plots.reason_bars(reasons, s["docs_in"], key)
        items = "".join(
            f'<li data-stage="{escape(s["folder"])}" data-reason="{escape(r)}" '
            f'data-value="{n}">{escape(r)}: {_int(n)} ({_pct(n, s["docs_in"])})</li>'
            for r, n in reasons.items()
        )
        cards.append(
            f'<figure data-chart="{key}" data-bars="{len(reasons)}">'
            f"<h3>{escape(s['folder'])}</h3>{svg}"
            f"<figcaption>of {_int(s['docs_in'])} documents in<ul>{items}</ul></figcaption>"
            "</figure>"
        )
    quiet = [s["folder"] for s in stages if not s.get("dropped")]
    note = f'<p class="note">No drops: {escape(", ".join(quiet))}.</p>' if quiet else ""
    return f'<h2>Drop reasons</h2><div class="grid">{"".join(cards)}</div>{note}'


def _signals_section(output: Path, stages: list[dict], configs: list) -> str:
    parts = []
    for s, given in zip(stages, configs, strict=True):
        dataset = data.log_dataset(output, s["folder"])
        if dataset is None:
            continue
        columns = data.numeric_signals(dataset.schema)
        if not columns:
            continue
        sample = data.sample_signals(dataset, columns)
        marks = thresholds_for(s["name"], given, columns)
        figures = []
        for c in columns:
            key = f"hist-{s['folder']}-{c}"
            h = plots.histogram(
                c, sample.columns[c], sample.kept, marks.get(c, []), c in sample.integer, key
            )
            if h is None:
                figures.append(
                    f'<figure data-chart="{escape(key)}" data-bins="0"><b>{escape(c)}</b>'
                    "<figcaption>no document has a value</figcaption></figure>"
                )
                continue
            lines = [
                t.describe() + (" (guessed from names)" if t.guessed else "")
                for t in marks.get(c, [])
            ]
            caption = "<br>".join(escape(x) for x in lines + h.notes)
            figures.append(
                f'<figure data-chart="{escape(key)}" data-bins="{h.bins}" '
                f'data-thresholds="{len(marks.get(c, []))}">{h.svg}'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        sampled = (
            f"a uniform sample of {_int(sample.rows)} of {_int(sample.total)} rows"
            if sample.sampled
            else f"all {_int(sample.total)} rows"
        )
        parts.append(
            f"<h3>{escape(s['folder'])}</h3>"
            f'<p class="note">Decision log, {sampled}; blue: kept, orange: dropped by this stage '
            f"(any rule); dashed red: the run's threshold.</p>"
            f'<div class="grid">{"".join(figures)}</div>'
        )
    if not parts:
        return ""
    return (
        "<h2>Signals</h2>"
        '<p class="note">Every numeric signal column of each decision log. Thresholds are the '
        "run's params (defaults filled in); which param bounds which signal is a table in "
        "<code>refine/report/thresholds.py</code> for the stages refine ships.</p>" + "".join(parts)
    )


def _language_section(output: Path, stages: list[dict]) -> str:
    stage = next((s for s in stages if s["name"] == "language"), None)
    if stage is None:
        return ""
    dataset = data.log_dataset(output, stage["folder"])
    if dataset is None or "language" not in dataset.schema.names:
        return ""
    before, after = data.language_counts(dataset)
    svg = plots.languages(before, after, "languages")
    rows = "".join(
        f'<tr><td class="l">{escape(lang)}</td><td data-lang="{escape(lang)}" data-when="before">'
        f'{_int(n)}</td><td data-lang="{escape(lang)}" data-when="after">{_int(after[lang])}</td>'
        "</tr>"
        for lang, n in before.most_common(30)
    )
    return (
        "<h2>Languages</h2>"
        f'<p class="note">Top language of every document the <code>{escape(stage["folder"])}'
        f"</code> stage saw ({_int(sum(before.values()))}, before) and of those it kept "
        f"({_int(sum(after.values()))}, after).</p>"
        f'<div class="row"><figure data-chart="languages">{svg}</figure>'
        f'<table><tr><th class="l">language</th><th>before</th><th>after</th></tr>{rows}</table>'
        "</div>"
    )


def _dedup_section(output: Path, stages: list[dict]) -> str:
    parts = []
    for s in stages:
        if _is_line_examples(s.get("examples")):
            parts.append(_removed_lines(s))
            continue
        dataset = data.log_dataset(output, s["folder"])
        if dataset is None or "duplicate_of" not in dataset.schema.names:
            continue
        summary = data.dedup_summary(output, s["folder"], dataset)
        counters = s.get("counters", {})
        if "clusters" in counters:
            clusters = (
                f'<span data-stage="{escape(s["folder"])}" data-field="clusters">'
                f"{_int(counters['clusters'])}</span>"
            )
        else:  # the stage does not count them: say where the number comes from
            clusters = f"{_int(sum(summary.cluster_sizes.values()))} (counted in the decision log)"
        head = (
            f"<h3>{escape(s['folder'])}</h3><p>{clusters} clusters with more than one document; "
            f"{_int(sum(s.get('dropped', {}).values()))} documents removed.</p>"
        )
        if not summary.cluster_sizes:
            parts.append(head)
            continue
        key = f"clusters-{s['folder']}"
        svg = plots.cluster_sizes(summary.cluster_sizes, key)
        pairs = []
        for e in summary.examples:
            pairs.append(
                '<div class="pair"><div><b>removed</b> '
                f"<code>{escape(str(e['id']))}</code><br>{escape(str(e['url']))}"
                f"<pre>{escape(_cut(e['text']))}</pre></div>"
                f"<div><b>kept (duplicate_of)</b> <code>{escape(str(e['survivor_id']))}</code>"
                f"<br>{escape(str(e['survivor_url']))}"
                f"<pre>{escape(_cut(e['survivor_text']))}</pre></div></div>"
            )
        parts.append(
            head + f'<figure data-chart="{key}" style="max-width:460px">{svg}'
            "<figcaption>cluster sizes</figcaption></figure>"
            f"<h4>Examples (text as it entered the stage)</h4>{''.join(pairs)}"
        )
    return "<h2>Deduplication</h2>" + "".join(parts) if parts else ""


def _contamination_section(output: Path, stages: list[dict]) -> str:
    """Per benchmark: the items that matched documents, and the documents dropped or cut."""
    parts = []
    for s in stages:
        if s.get("name") != "decontaminate":
            continue
        rows = data.contamination(output, s["folder"])
        body = "".join(
            f"<tr><td>{escape(r['benchmark'])}</td><td>{_int(r['items_hit'])}</td>"
            f"<td>{_int(r['dropped'])}</td><td>{_int(r['cut'])}</td></tr>"
            for r in rows
        )
        table = (
            "<table><tr><th>benchmark</th><th>items hit</th><th>documents dropped</th>"
            f"<th>documents cut</th></tr>{body}</table>"
            if rows
            else "<p>No document matched an evaluation item.</p>"
        )
        parts.append(f"<h3>{escape(s['folder'])}</h3>{table}")
    return "<h2>Contamination</h2>" + "".join(parts) if parts else ""


def _is_line_examples(examples: list[dict] | None) -> bool:
    """A line-level stage's examples (``dedup_lines``): removed lines with their corpus count."""
    return bool(examples) and all("line" in e and "count" in e for e in examples)


def _removed_lines(s: dict) -> str:
    """``dedup_lines``: what it removed, and the sample of removed lines report.json keeps (the
    most repeated ones, each with its count in the corpus and a document it was removed from)."""
    f = s["folder"]
    counters = s.get("counters", {})
    figures = []
    for key, label in (
        ("repeated_lines", "distinct repeated lines"),
        ("lines_removed", "lines removed"),
        ("docs_with_lines_removed", "documents with lines removed"),
    ):
        if key in counters:
            figures.append(
                f'<span data-stage="{escape(f)}" data-field="{key}">{_int(counters[key])}</span> '
                + label
            )
    dropped = sum(s.get("dropped", {}).values())
    figures.append(f"{_int(dropped)} documents left empty and removed")
    rows = "".join(
        "<tr>"
        + _td(e["count"], _int(e["count"]), f, f"removed_line_count_{i}")
        + f'<td class="l"><code>{escape(_cut_line(str(e["line"])))}</code></td>'
        + f'<td class="l"><code>{escape(str(e.get("id", "")))}</code></td></tr>'
        for i, e in enumerate(s["examples"])
    )
    return (
        f"<h3>{escape(f)}</h3><p>{'; '.join(figures)}.</p>"
        f"<h4>Most repeated removed lines (sample of {len(s['examples'])})</h4>"
        f'<table id="removed-lines-{escape(f)}"><tr><th>times in corpus</th>'
        '<th class="l">line</th><th class="l">removed from (e.g.)</th></tr>'
        f"{rows}</table>"
    )


def _cut_line(line: str) -> str:
    if len(line) <= LINE_CHARS:
        return line
    return line[:LINE_CHARS] + f"… [{len(line) - LINE_CHARS:,} more characters]"


def _cut(text: str | None) -> str:
    if text is None:
        return "(text not kept at any checkpoint before this stage)"
    if len(text) <= EXAMPLE_CHARS:
        return text
    return text[:EXAMPLE_CHARS] + f"… [{len(text) - EXAMPLE_CHARS:,} more characters]"


def _facts_section(report: dict) -> str:
    inputs = report.get("inputs", {})
    urls = inputs.get("urls", [])
    listed = "".join(f"<li><code>{escape(str(u))}</code></li>" for u in urls[:MAX_INPUTS_LISTED])
    if len(urls) > MAX_INPUTS_LISTED:
        listed += f"<li>… and {len(urls) - MAX_INPUTS_LISTED:,} more</li>"
    cluster = report.get("cluster", {})
    parts = report.get("parts", {})
    config = yaml.safe_dump(report.get("config", {}), sort_keys=False, allow_unicode=True)
    facts = [
        ("refine version", report.get("refine_version")),
        ("started", report.get("started_at")),
        ("finished", report.get("finished_at")),
        ("wall seconds", report.get("wall_seconds")),
        ("complete", report.get("complete")),
        ("scheduler", cluster.get("scheduler")),
        ("workers", cluster.get("workers")),
        ("threads", cluster.get("threads")),
        (
            "parts (total / resumed / failed)",
            "{} / {} / {}".format(parts.get("total"), parts.get("resumed"), parts.get("failed")),
        ),
        ("input files", inputs.get("files")),
        ("input bytes", _int(inputs.get("bytes", 0))),
        ("report rendered", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")),
    ]
    rows = "".join(
        f'<tr><td class="l">{escape(k)}</td><td class="l">{escape(str(v))}</td></tr>'
        for k, v in facts
    )
    errors = _errors(report)
    return (
        "<h2>Run</h2>"
        f'<div class="row"><table id="facts">{rows}</table>'
        f'<div style="flex:1;min-width:380px"><b>config</b><pre>{escape(config)}</pre></div></div>'
        f"<h3>Input files</h3><ul>{listed}</ul>{errors}"
    )


def _errors(report: dict) -> str:
    blocks = []
    for s in report.get("stages", []):
        errors = s.get("errors") or []
        if not errors:
            continue
        rows = "".join(
            f'<tr><td class="l">{escape(str(e.get("reason")))}</td>'
            f'<td class="l"><code>{escape(str(e.get("source")))}</code></td>'
            f'<td class="l">{escape(str(e.get("detail"))[:300])}</td></tr>'
            for e in errors
        )
        blocks.append(
            f"<details><summary>{escape(s['folder'])}: {len(errors)} example(s)</summary>"
            f"<table>{rows}</table></details>"
        )
    failed = report.get("failed_parts") or []
    if failed:
        blocks.append(
            f"<details open><summary>{len(failed)} failed part(s)</summary><pre>"
            f"{escape(json.dumps(failed, indent=1, default=str))}</pre></details>"
        )
    return "<h3>Problems recorded</h3>" + "".join(blocks) if blocks else ""
