"""The ``refine`` command line.

User mistakes (bad config, missing input, unwritable output) print one line and exit 2 before
any work starts; an unexpected failure exits 1 and leaves finished parts for a resumed run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from refine import __version__
from refine.errors import InputError, RefineError, RunIncomplete

if TYPE_CHECKING:
    from refine.pipeline.storage import OutputLayout

EXIT_USER_ERROR = 2


def _run(args: argparse.Namespace, console: Console) -> int:
    from refine.pipeline.cluster import dashboard_link, dask_client
    from refine.pipeline.config import load_config
    from refine.pipeline.progress import RichProgress
    from refine.pipeline.runner import Runner

    t0 = time.perf_counter()
    overrides = {
        "input": args.input,
        "output": args.output,
        "address": args.scheduler,
        "workers": args.workers,
        "keep_intermediate": True if args.keep_intermediate else None,
    }
    config = load_config(args.config, overrides)
    try:
        runner = Runner.prepare(config)  # resolves inputs and checks stages: fails before work
    except InputError as e:
        raise InputError(_input_problem(args, config.input, e)) from None
    progress = None if args.no_progress else RichProgress(console)
    runner.progress = progress or runner.progress
    console.print(
        f"refine {__version__}: {len(runner.inputs)} input file(s) -> {runner.layout.root}"
    )
    with dask_client(config.cluster, quiet=not args.verbose) as client:
        link = dashboard_link(client, config.cluster)
        if link:
            console.print(f"Dask dashboard: {link}")
        summary = runner.run(client)
    _print_report(summary.report, _console(stderr=False))
    if summary.parts_skipped:
        console.print(
            f"resumed: {summary.parts_skipped} of {summary.parts_total} parts were already done"
        )
    _print_outputs(runner.layout, summary.report, console)
    console.print(f"wall time: {_duration(time.perf_counter() - t0)}")
    console.print(f"report: {runner.layout.report()}")
    return 0


def _input_problem(args: argparse.Namespace, inputs: list[str], e: InputError) -> str:
    """The error, naming the config (or --input) the input came from and, for a relative local
    path, the directory it was looked up in."""
    from refine.pipeline.inputs import CRAWL_ID

    where = f"{args.config} with --input" if args.input else str(args.config)
    named = [i for i in inputs if repr(i) in str(e)]  # the message quotes the pattern
    relative = any(
        "://" not in i and not CRAWL_ID.match(i) and not Path(i).expanduser().is_absolute()
        for i in named
    )
    cwd = f" (relative to the current directory {Path.cwd()})" if relative else ""
    return f"{where}: {e}{cwd}"


_PATH_LINE = {"markup": False, "soft_wrap": True}  # a path stays whole, whatever its width


def _print_outputs(layout: OutputLayout, report: dict, console: Console) -> None:
    """Where the results are: the final documents, the dataset shards and the tokens."""
    dataset = report.get("dataset")
    if dataset:
        folder = layout.documents(dataset["from"])
        shards = f"{dataset['shards']:,} {dataset['format']} shard(s)"
        console.print(f"documents: {dataset['documents']:,} in {folder}", **_PATH_LINE)
        console.print(f"dataset: {shards} in {layout.dataset()}", **_PATH_LINE)
    manifest = layout.root / "tokens" / "manifest.json"
    if any(s["name"] == "tokenize" for s in report["stages"]) and manifest.is_file():
        m = json.loads(manifest.read_text(encoding="utf-8"))
        console.print(
            f"tokens: {m['tokens']:,} ({m['documents']:,} documents, {len(m['shards'])} "
            f"shard(s): {', '.join(m['formats'])}) in {manifest.parent}",
            **_PATH_LINE,
        )


def _duration(seconds: float) -> str:
    """``12.3 s`` under a minute, ``1:02:03`` (h:mm:ss) from there."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"


def _plan(args: argparse.Namespace, console: Console) -> int:
    from refine.pipeline.config import build_stages, load_config
    from refine.plan import make_plan

    overrides = {"input": args.input, "output": args.output}
    config = load_config(args.config, overrides)
    plan = make_plan(args.config, config, build_stages(config.stages))
    if args.json:
        print(json.dumps(plan.to_dict(), default=str, indent=1))
        return 0
    out = _console(stderr=False)
    inp = plan.inputs
    out.print(f"[bold]refine plan[/bold] {plan.config} -> {plan.output}", highlight=False)
    out.print(
        f"inputs: {inp['readable']} of {inp['files']} file(s) readable, "
        f"{inp['bytes'] / 1e9:.2f} GB; parts: {plan.parts if plan.parts is not None else '?'}",
        highlight=False,
    )
    for u in inp["unreachable"]:
        out.print(f"  could not reach {u['url']}: {u['error']}", highlight=False, markup=False)
    table = Table(title="stages")
    for col in ("stage", "kind", "parameters and sources", "docs in (est.)", "worker-h (est.)"):
        table.add_column(col, justify="right" if "est." in col else "left")
    for s in plan.stages:
        params = ", ".join(f"{k}={v}" for k, v in s.params.items())
        lines = [_short(params, 400)]
        lines += [f"{k} <- {v}" for k, v in s.sources.items()]
        if s.resources:
            need = " ".join(f"{k}={v:g}" for k, v in sorted(s.resources.items()))
            lines.append(f"runs only on Dask workers with resources {need}")
        if s.problem:
            lines.append(f"PROBLEM: {s.problem}")
        docs = f"{s.documents:,.0f}" if s.documents is not None else "?"
        hours = f"{s.worker_hours:,.2f}" if s.worker_hours is not None else "-"
        table.add_row(s.folder, s.kind, "\n".join(lines), docs, hours)
    out.print(table)
    if plan.worker_hours is not None:
        out.print(f"total: ~{plan.worker_hours:,.2f} worker-hours (one worker = one core)")
    for note in plan.notes:
        out.print(f"note: {note}", highlight=False, markup=False)
    return 0


def _print_contamination(output: Path, report: dict, console: Console) -> None:
    """The decontaminate stages' table: per benchmark, items hit, documents dropped or cut."""
    from refine.report.data import contamination

    for s in report["stages"]:
        if s["name"] != "decontaminate":
            continue
        table = Table(title=f"{s['folder']}: contamination by benchmark")
        for col in ("benchmark", "items hit", "documents dropped", "documents cut"):
            table.add_column(col, justify="left" if col == "benchmark" else "right")
        for r in contamination(output, s["folder"]):
            table.add_row(r["benchmark"], str(r["items_hit"]), str(r["dropped"]), str(r["cut"]))
        console.print(table)


def _print_report(report: dict, console: Console) -> None:
    table = Table(title="refine: per-stage keep rates")
    for col in (
        "stage",
        "docs in",
        "docs out",
        "keep",
        "MB in",
        "MB out",
        "top drop reasons",
        "worker s",
    ):
        table.add_column(col, justify="left" if col in ("stage", "top drop reasons") else "right")
    for s in report["stages"]:
        keep = f"{100 * s['keep_rate']:.1f}%" if s["keep_rate"] is not None else "-"
        reasons = ", ".join(f"{k} {v}" for k, v in list(s["dropped"].items())[:4])
        table.add_row(
            s["folder"],
            str(s["docs_in"]),
            str(s["docs_out"]),
            keep,
            f"{s['bytes_in'] / 1e6:.1f}",
            f"{s['bytes_out'] / 1e6:.1f}",
            reasons,
            f"{s['seconds']:.1f}",
        )
    console.print(table)


def _report(args: argparse.Namespace, console: Console) -> int:
    path = Path(args.output) / "report.json"
    if not path.is_file():
        raise RefineError(f"{path}: no report here (has `refine run` finished on this output?)")
    report = json.loads(path.read_text(encoding="utf-8"))
    _print_report(report, _console(stderr=False))
    _print_contamination(Path(args.output), report, _console(stderr=False))
    if args.html:
        from refine.report import render_html

        page = render_html(args.output, args.html)
        console.print(f"html report: {page}")
        if args.open:
            import webbrowser

            webbrowser.open(page.resolve().as_uri())
    return 0


def _short(value: object, width: int = 300) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _inspect(args: argparse.Namespace, console: Console) -> int:
    from refine.inspect import count_matching, inspect

    rows = inspect(args.output, args.stage, reason=args.reason, kept=args.kept, n=args.n)
    total = count_matching(args.output, args.stage, reason=args.reason, kept=args.kept)
    if args.json:
        print(json.dumps(rows, default=str, ensure_ascii=False, indent=1))
        return 0
    out = _console(stderr=False)
    what = "kept" if args.kept else f"dropped{f' as {args.reason}' if args.reason else ''}"
    shown = f"{len(rows)} of {total}" if len(rows) < total else f"{total}"
    out.print(f"[bold]{args.stage}[/bold]: {shown} document(s) {what}")
    for r in rows:
        out.rule()
        out.print(f"[bold]{r['url'] or r['source']}[/bold]  id={r['id']}")
        if not args.kept:
            out.print(f"reason: {r['reason']}" + (f"  ({r['detail']})" if r["detail"] else ""))
        if r["signals"]:
            out.print("signals: " + ", ".join(f"{k}={_fmt(v)}" for k, v in r["signals"].items()))
        out.print(f"source: {r['source']}")
        out.print(
            f"text: {_short(r['text'])}" if r["text"] else "text: (not kept at any checkpoint)"
        )
    return 0


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _explain(args: argparse.Namespace, console: Console) -> int:
    from refine.inspect import explain

    fates = explain(args.output, doc_id=args.id, url=args.url)
    if args.json:
        print(json.dumps({k: [d.__dict__ for d in v] for k, v in fates.items()}, default=str))
        return 0
    out = _console(stderr=False)
    for doc, decisions in fates.items():
        table = Table(title=f"document {doc}")
        for col in ("stage", "decision", "signals"):
            table.add_column(col)
        for d in decisions:
            verdict = "kept" if d.kept else f"dropped: {d.reason}"
            if d.detail:
                verdict += f" ({_short(d.detail, 80)})"
            signals = ", ".join(f"{k}={_fmt(v)}" for k, v in d.signals.items())
            table.add_row(d.folder, verdict, _short(signals, 200))
        out.print(table)
    return 0


def _build_reference(args: argparse.Namespace, console: Console) -> int:
    from refine.filters.reference import build_reference

    # Path, not str: a plain str would be taken as a text, not a file
    summary = build_reference(
        [Path(p) for p in args.text], args.out, top_k=args.top_k, language=args.language
    )
    print(json.dumps(summary, default=str))
    return 0


def _verify(args: argparse.Namespace, console: Console) -> int:
    from refine.tokenize import verify

    rep = verify(args.output, sample=args.sample)
    print(json.dumps(rep.to_dict(), default=str, indent=1))
    if not rep.ok:
        print(f"refine: verify: {len(rep.problems)} problem(s) in {args.output}", file=sys.stderr)
        return 1
    return 0


def _push(args: argparse.Namespace, console: Console) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from refine.push import push

    if args.token:
        print(
            "refine: push: --token shows the token to every user of this machine in the process "
            "list; set HF_TOKEN (or `hf auth login`) instead",
            file=sys.stderr,
        )
    try:
        result = push(
            args.output,
            args.repo,
            token=args.token,
            endpoint=args.endpoint,
            private=args.private,
            revision=args.revision,
            commit_message=args.message,
            documents=not args.no_documents,
            allow_incomplete=args.allow_incomplete,
            license=args.license,
        )
    except HfHubHTTPError as e:  # auth, permissions, network: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RefineError(f"push to {args.repo} failed: {first}") from e
    console.print(
        f"pushed {result.files} file(s), {result.bytes / 1e6:.1f} MB -> {result.repo_url}\n"
        f"commit: {result.commit_url}"
    )
    return 0


def _train_tokenizer(args: argparse.Namespace, console: Console) -> int:
    from refine.tokenize import train_tokenizer

    out = train_tokenizer([Path(p) for p in args.text], args.vocab_size, args.out)
    console.print(f"tokenizer: {out}")
    return 0


def _train_lm(args: argparse.Namespace, console: Console) -> int:
    from refine.training import train_lm

    result = train_lm(
        args.text,
        args.order,
        args.out,
        sp_model_out=args.sp_out,
        vocab_size=args.vocab_size,
        memory=args.memory,
        prune=args.prune,
        kenlm_bin=args.kenlm_bin,
    )
    print(json.dumps(result, default=str))
    return 0


def _train_quality(args: argparse.Namespace, console: Console) -> int:
    from refine.training import train_quality

    result = train_quality(
        args.positive,
        args.negative,
        args.out,
        positive_label=args.positive_label,
        epoch=args.epoch,
        lr=args.lr,
        dim=args.dim,
        word_ngrams=args.word_ngrams,
        valid_fraction=args.valid_fraction,
        bucket=args.bucket,
        threads=args.threads,
        seed=args.seed,
    )
    print(json.dumps(result, default=str))
    return 0


def _train_classifier(args: argparse.Namespace, console: Console) -> int:
    from refine.classifier_training import read_records, train_classifier

    paths = list(args.text)
    label_file = Path(args.labels)
    if label_file.is_file():
        records = read_records(paths, args.text_field, None)
        labels = [ln.strip() for ln in label_file.read_text(encoding="utf-8").splitlines()]
        labels = [_number_or_text(x) for x in labels if x]
        if len(labels) != len(records):
            raise InputError(
                f"{label_file}: {len(labels)} labels for {len(records)} documents (one label per "
                "line, in document order)"
            )
    else:
        records = read_records(paths, args.text_field, args.labels)
        labels = [r["label"] for r in records]
    result = train_classifier(
        [r["text"] for r in records],
        labels,
        args.base,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.lr,
        holdout=args.holdout,
        seed=args.seed,
        threads=args.threads,
    )
    print(json.dumps(result, default=str))
    return 0


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _stages(args: argparse.Namespace, console: Console) -> int:
    from refine.pipeline.registry import STAGES, stage_class

    for name in STAGES:
        cls = stage_class(name)
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        console.print(f"[bold]{name}[/bold] ({cls.kind}): {summary}", highlight=False)
        for field, info in cls.Params.model_fields.items():
            desc = f"  # {' '.join(info.description.split())}" if info.description else ""
            if info.is_required():
                default = "(required)"
            elif info.default_factory is not None:
                default = repr(info.default_factory())
            else:
                default = repr(info.default)
            console.print(f"    {field}: {default}{desc}", highlight=False, markup=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refine", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"refine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline config")
    run.add_argument("config", help="pipeline YAML")
    run.add_argument(
        "--input", nargs="+", help="files, globs, URLs or crawl ids (overrides input:)"
    )
    run.add_argument("--output", help="output directory (overrides output:)")
    run.add_argument("--scheduler", help="address of an existing Dask scheduler, tcp://HOST:PORT")
    run.add_argument("--workers", type=int, help="LocalCluster worker processes")
    run.add_argument(
        "--keep-intermediate", action="store_true", help="write every stage's documents"
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    run.add_argument("-v", "--verbose", action="store_true", help="show Dask's logs")
    run.set_defaults(func=_run)

    rep = sub.add_parser("report", help="print the per-stage summary of a finished run")
    rep.add_argument("output", help="the run's output directory")
    rep.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    rep.add_argument("--open", action="store_true", help="open the HTML report in a browser")
    rep.set_defaults(func=_report)

    ins = sub.add_parser("inspect", help="documents a stage dropped (or kept), with the signals")
    ins.add_argument("output", help="the run's output directory")
    ins.add_argument("--stage", required=True, help="stage name (e.g. gopher_quality) or folder")
    ins.add_argument("--reason", help="only this drop reason")
    ins.add_argument("--kept", action="store_true", help="show kept documents instead")
    ins.add_argument("-n", type=int, default=10, help="how many (default 10)")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=_inspect)

    exp = sub.add_parser("explain", help="the fate of one document through every stage")
    exp.add_argument("output", help="the run's output directory")
    who = exp.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", help="document id (WARC-Record-ID)")
    who.add_argument("--url", help="document URL (every capture of it)")
    exp.add_argument("--json", action="store_true", help="machine-readable output")
    exp.set_defaults(func=_explain)

    bref = sub.add_parser(
        "build-reference", help="token distribution of a corpus (llama3_heuristics KL)"
    )
    bref.add_argument("--text", nargs="+", required=True, help="Parquet / JSON lines / text files")
    bref.add_argument("--out", required=True, help="reference JSON to write")
    bref.add_argument("--top-k", type=int, default=50_000, help="tokens kept (default 50000)")
    bref.add_argument("--language", help="recorded in the file")
    bref.set_defaults(func=_build_reference)

    ver = sub.add_parser(
        "verify", help="re-read every token shard and check it against the manifest"
    )
    ver.add_argument("output", help="the run's output directory")
    ver.add_argument("--sample", type=int, default=200, help="documents decoded and compared")
    ver.set_defaults(func=_verify)

    psh = sub.add_parser(
        "push", help="upload shards, manifest, report and a dataset card to the Hugging Face Hub"
    )
    psh.add_argument("output", help="the run's output directory")
    psh.add_argument("--repo", required=True, help="dataset repository, ORG/NAME")
    psh.add_argument(
        "--token",
        help="Hub token; discouraged: the process list shows it, set HF_TOKEN instead "
        "(default: HF_TOKEN or the saved login)",
    )
    psh.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    psh.add_argument("--private", action="store_true", help="create the repository private")
    psh.add_argument("--revision", help="branch to commit to (default: main)")
    psh.add_argument("--message", help="commit message")
    psh.add_argument("--license", default="other", help="license in the card (default: other)")
    psh.add_argument("--no-documents", action="store_true", help="token shards only, no text")
    psh.add_argument(
        "--allow-incomplete", action="store_true", help="publish a run with failed parts"
    )
    psh.set_defaults(func=_push)

    ttok = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer")
    ttok.add_argument("--text", nargs="+", required=True, help="text / Parquet files or folders")
    ttok.add_argument("--vocab-size", type=int, required=True)
    ttok.add_argument("--out", required=True, help="tokenizer.json to write")
    ttok.set_defaults(func=_train_tokenizer)

    tlm = sub.add_parser("train-lm", help="train a SentencePiece + KenLM model for `perplexity`")
    tlm.add_argument("--text", nargs="+", required=True, help="JSON lines / Parquet / text files")
    tlm.add_argument("--order", type=int, default=5)
    tlm.add_argument("--out", required=True, help="KenLM binary to write")
    tlm.add_argument("--sp-out", help="SentencePiece model (default: OUT stem + .sp.model)")
    tlm.add_argument("--vocab-size", type=int, default=32000)
    tlm.add_argument("--memory", default="20%", help="lmplz -S")
    tlm.add_argument("--prune", type=int, nargs="+", help="lmplz --prune counts per order")
    tlm.add_argument("--kenlm-bin", help="folder with lmplz and build_binary")
    tlm.set_defaults(func=_train_lm)

    tq = sub.add_parser("train-quality", help="train a fastText quality classifier")
    tq.add_argument("--positive", nargs="+", required=True)
    tq.add_argument("--negative", nargs="+", required=True)
    tq.add_argument("--out", required=True, help="fastText .bin to write")
    tq.add_argument("--positive-label", default="__label__hq")
    tq.add_argument("--epoch", type=int, default=5)
    tq.add_argument("--lr", type=float, default=0.1)
    tq.add_argument("--dim", type=int, default=100)
    tq.add_argument("--word-ngrams", type=int, default=2)
    tq.add_argument("--valid-fraction", type=float, default=0.1)
    tq.add_argument("--bucket", type=int, default=500_000, help="n-gram hash buckets (model size)")
    tq.add_argument("--threads", type=int, help="training threads (1 makes training repeatable)")
    tq.add_argument("--seed", type=int, default=0, help="shuffle / held-out split seed")
    tq.set_defaults(func=_train_quality)

    tc = sub.add_parser(
        "train-classifier", help="fine-tune an encoder on labelled documents (model_classifier)"
    )
    tc.add_argument("--text", nargs="+", required=True, help="JSON lines / Parquet files")
    tc.add_argument(
        "--labels",
        required=True,
        help="the label field of the records, or a file with one label per line (numbers: a "
        "regressor; other labels: a classifier)",
    )
    tc.add_argument(
        "--base",
        required=True,
        help="hub id or folder of an encoder, a config.json (random weights), or `tiny` (a "
        "2-layer BERT from a config: the offline stand-in)",
    )
    tc.add_argument("--out", required=True, help="model folder to write")
    tc.add_argument("--text-field", default="text")
    tc.add_argument("--epochs", type=int, default=3)
    tc.add_argument("--batch-size", type=int, default=16)
    tc.add_argument("--max-length", type=int, default=256, help="tokens per document in training")
    tc.add_argument("--lr", type=float, help="learning rate (default: 1e-3 tiny, 3e-5 otherwise)")
    tc.add_argument("--holdout", type=float, default=0.1, help="share held out for the metrics")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--threads", type=int, help="torch threads")
    tc.set_defaults(func=_train_classifier)

    pl = sub.add_parser(
        "plan", help="what a run would do, from where, at what cost (nothing is run or written)"
    )
    pl.add_argument("config", help="pipeline YAML")
    pl.add_argument("--input", nargs="+", help="files, globs, URLs or crawl ids (overrides input:)")
    pl.add_argument("--output", help="output directory (overrides output:)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=_plan)

    st = sub.add_parser("stages", help="list the registered stages and their parameters")
    st.set_defaults(func=_stages)
    return parser


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # rich assumes 80 columns when not on a terminal; the table wants more than that in logs
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = _console(stderr=True)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args, console)
    except RunIncomplete as e:
        print(f"refine: error: {e}", file=sys.stderr)
        return 1
    except RefineError as e:
        print(f"refine: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "refine: interrupted; finished parts are kept, re-run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
