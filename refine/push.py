"""``refine push OUTPUT --repo ORG/NAME``: a finished run, as a dataset repository on the Hub.

What goes up, in one commit (``huggingface_hub``'s ``create_commit``):

- ``tokens/``: every shard file that ``manifest.json`` lists, and the manifest itself;
- ``data/``: the final documents (text, URL, date and the saved signals), so the Hub's viewer
  and ``datasets.load_dataset(ORG/NAME)`` read them (``--no-documents`` leaves them out);
- ``report.json`` and the self-contained ``report.html``;
- ``README.md``: a dataset card generated from the report and the manifest (stages and keep
  rates, tokenizer, token counts, how to load each format).

Nothing is uploaded unless the run is complete and its shards pass ``refine verify``: a user
must never publish shards with a wrong checksum or a run that lost parts. The endpoint is
``HF_ENDPOINT`` (or ``--endpoint``) like every huggingface_hub tool; the token is ``--token``,
``HF_TOKEN`` or the saved login. Files already on the Hub with the same content are skipped by
huggingface_hub, so pushing again after a partial failure sends only what is missing.

What goes up says nothing of where the run was made (``refine.redact``): report.json, the
manifest, the page and the card are published copies without local paths, the scheduler's
address or values from the environment, and a Parquet file whose ``source`` column names local
files (the documents, the token Parquet and docs index) goes up as a copy with those rewritten,
written to a temporary folder (``TMPDIR``); the manifest published lists the copies' sizes and
sha256. The run's own files are never changed.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from refine import __version__
from refine.errors import RefineError
from refine.redact import Redactor, redact_parquet


@dataclass
class PushPlan:
    """What ``push`` would upload: repository path -> a file, or the bytes of one made for it."""

    files: dict[str, Path | bytes] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(
            len(f) if isinstance(f, bytes) else f.stat().st_size for f in self.files.values()
        )


@dataclass
class PushResult:
    repo_url: str
    commit_url: str
    files: int
    bytes: int


def plan_push(
    output_dir: str | Path,
    repo_id: str,
    *,
    scratch: Path,
    documents: bool = True,
    allow_incomplete: bool = False,
    license: str = "other",
    verify_sample: int = 50,
) -> PushPlan:
    """Check the run and list what to upload; the Parquet copies it makes go under ``scratch``.
    Raises RefineError naming what is wrong."""
    root = Path(output_dir)
    report_path = root / "report.json"
    if not report_path.is_file():
        raise RefineError(f"{report_path}: no report here (has `refine run` finished on it?)")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if not report.get("complete", False) and not allow_incomplete:
        failed = len(report.get("failed_parts") or [])
        raise RefineError(
            f"{root}: the run is incomplete ({failed} failed part(s)); re-run it to finish, "
            "or pass --allow-incomplete to publish it anyway"
        )
    plan = PushPlan()
    redactor = Redactor.for_run(root, report)
    public = redactor.report(report)
    manifest = None
    manifest_path = root / "tokens" / "manifest.json"
    if manifest_path.is_file():
        from refine.tokenize.verification import verify

        checked = verify(root, sample=verify_sample)
        if not checked.ok:
            shown = "; ".join(checked.problems[:5])
            raise RefineError(f"{root}: shards fail `refine verify`, nothing pushed: {shown}")
        manifest = redactor.json(json.loads(manifest_path.read_text(encoding="utf-8")))
        for shard in manifest["shards"]:
            for rel, facts in shard["files"].items():
                local, copy = root / "tokens" / rel, scratch / "tokens" / rel
                plan.files[f"tokens/{rel}"] = _published(local, copy, redactor, facts)
        plan.files["tokens/manifest.json"] = _json_bytes(manifest)
    docs_dir = _final_documents(root, report) if documents else None
    if docs_dir is not None:
        for part in sorted(docs_dir.glob("*.parquet")):
            if not part.name.startswith((".", "_")):
                copy = scratch / "data" / part.name
                plan.files[f"data/{part.name}"] = _published(part, copy, redactor)
    if not plan.files:
        raise RefineError(f"{root}: nothing to push (no token shards and no documents)")
    from refine.report import html_page

    plan.files["report.json"] = _json_bytes(public)
    plan.files["report.html"] = html_page(root, public).encode("utf-8")
    card = dataset_card(
        repo_id, public, manifest, has_documents=docs_dir is not None, license=license
    )
    plan.files["README.md"] = card.encode("utf-8")
    return plan


def _published(local: Path, copy: Path, redactor: Redactor, facts: dict | None = None) -> Path:
    """``local``, or for a Parquet file whose ``source`` names local files a copy without them;
    ``facts`` (its size and sha256 in the manifest) then describe the copy."""
    if local.suffix != ".parquet" or not redact_parquet(local, copy, redactor):
        return local
    if facts is not None:
        from refine.tokenize.writers import file_facts

        facts.update(file_facts(copy))
    return copy


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, default=str).encode("utf-8")


def push(
    output_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    documents: bool = True,
    allow_incomplete: bool = False,
    license: str = "other",
) -> PushResult:
    """Upload a finished run to the dataset repository ``repo_id`` (created if missing)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise RefineError(f"--repo {repo_id!r}: expected ORG/NAME")
    with tempfile.TemporaryDirectory(prefix="refine-push-") as scratch:
        plan = plan_push(
            output_dir,
            repo_id,
            scratch=Path(scratch),
            documents=documents,
            allow_incomplete=allow_incomplete,
            license=license,
        )
        api = HfApi(endpoint=endpoint, token=token)
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        operations = [
            CommitOperationAdd(path, f if isinstance(f, bytes) else str(f))
            for path, f in plan.files.items()
        ]
        info = api.create_commit(
            repo_id,
            operations,
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message or f"refine {__version__}: push {Path(output_dir).name}",
        )
        return PushResult(str(repo_url), info.commit_url, len(operations), plan.bytes)


def _final_documents(root: Path, report: dict[str, Any]) -> Path | None:
    """The documents after the last stage that writes them (global stages pass them through)."""
    for stage in reversed(report.get("stages", [])):
        folder = root / "documents" / stage["folder"]
        if folder.is_dir() and any(folder.glob("*.parquet")):
            return folder
    return None


def _size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    return next(
        (label for bound, label in bounds if n < bound), "n>1T" if n >= 10**12 else "1B<n<10B"
    )


def _languages(report: dict[str, Any]) -> list[str]:
    for stage in report.get("config", {}).get("stages", []):
        params = stage.get("language")
        if isinstance(params, dict) and params.get("languages"):
            return [str(x) for x in params["languages"]]
    return []


def dataset_card(
    repo_id: str,
    report: dict[str, Any],
    manifest: dict[str, Any] | None,
    *,
    has_documents: bool,
    license: str = "other",
) -> str:
    """A Hub dataset card (YAML metadata + Markdown) from the run's report and manifest."""
    stages = report.get("stages", [])
    final_docs = stages[-1]["docs_out"] if stages else 0
    configs = []
    if has_documents:
        configs.append(
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
        )
    if manifest and "parquet" in manifest.get("formats", []):
        configs.append(
            {
                "config_name": "tokens",
                "data_files": [{"split": "train", "path": "tokens/parquet/*.parquet"}],
            }
        )
    meta: dict[str, Any] = {
        "license": license,
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(final_docs)],
        "tags": ["refine", "common-crawl", "pretraining"],
        "pretty_name": repo_id.split("/")[1],
    }
    if langs := _languages(report):
        meta["language"] = langs
    if configs:
        meta["configs"] = configs
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]
    lines += [
        f"# {repo_id.split('/')[1]}",
        "",
        f"Pretraining data made by refine {report.get('refine_version', '')}"
        f" from {report.get('inputs', {}).get('files', '?')} input file(s)"
        f" ({report.get('inputs', {}).get('bytes', 0) / 1e9:.2f} GB), finished "
        f"{report.get('finished_at', '?')}.",
        "",
        "## What each stage removed",
        "",
        "| stage | docs in | docs out | keep | top drop reasons |",
        "|---|---:|---:|---:|---|",
    ]
    for s in stages:
        keep = f"{100 * s['keep_rate']:.1f}%" if s.get("keep_rate") is not None else "-"
        reasons = ", ".join(f"{k} {v:,}" for k, v in list(s.get("dropped", {}).items())[:4])
        lines.append(f"| {s['name']} | {s['docs_in']:,} | {s['docs_out']:,} | {keep} | {reasons} |")
    lines += [
        "",
        "`report.html` has the funnel, the signal histograms and example documents; "
        "`report.json` has every count and the full config.",
        "",
    ]
    if manifest:
        tok = manifest["tokenizer"]
        lines += [
            "## Token shards",
            "",
            f"- tokenizer: `{tok['spec']}` (sha256 `{tok['sha256'][:16]}…`), vocabulary "
            f"{tok['vocab_size']:,}, BOS id {tok['bos_id']}, EOS id {tok['eos_id']} (after "
            "every document)",
            f"- {manifest['documents']:,} documents, {manifest['tokens']:,} tokens in "
            f"{len(manifest['shards'])} shard(s); formats: {', '.join(manifest['formats'])}",
            f"- dtypes: {', '.join(f'{k} {v}' for k, v in manifest['dtype'].items())}, "
            f"{manifest['byte_order']}-endian; sha256 of every file in `tokens/manifest.json`",
            "",
            "Reading them:",
            "",
            "```python",
        ]
        if "parquet" in manifest["formats"]:
            lines += [
                "from datasets import load_dataset",
                f'ds = load_dataset("{repo_id}", "tokens", split="train")  # input_ids',
            ]
        if "flat" in manifest["formats"]:
            lines += [
                "import numpy as np  # nanoGPT-style flat stream",
                f'ids = np.memmap("tokens/flat/shard-00000.bin", '
                f'dtype=np.{manifest["dtype"]["flat"]}, mode="r")',
            ]
        lines += ["```", ""]
        if "megatron" in manifest["formats"]:
            lines += [
                "Megatron-LM / NeMo: pass `tokens/megatron/shard-NNNNN` (without `.bin`) as "
                "a data path; the `.idx` holds the document boundaries.",
                "",
            ]
    if has_documents:
        lines += [
            "## Documents",
            "",
            "`data/` holds the final documents with their text, URL, crawl date and every "
            "saved filter signal as a column.",
            "",
        ]
    return "\n".join(lines)
