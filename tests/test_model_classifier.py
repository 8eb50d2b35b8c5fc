"""model_classifier and refine train-classifier: a tiny encoder trained here (no download)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hubstub import HubStub
from support import dask_cluster, report, require_shared_data, run_cli, stage, write_config

pytest.importorskip("transformers")
pytest.importorskip("torch")

from refine.classifier_training import read_records, train_tokenizer  # noqa: E402
from refine.errors import ConfigError  # noqa: E402
from refine.filters.model_classifier import ModelClassifier, ModelClassifierParams  # noqa: E402
from refine.pipeline.storage import OutputLayout  # noqa: E402
from refine.training import iter_documents, split_prose  # noqa: E402


@pytest.fixture(scope="module")
def labelled() -> tuple[list[str], list[str]]:
    """The sample text split into prose documents and documents of its other lines (titles,
    menus, list items): two label sets derived from the shared data."""
    data = require_shared_data()
    prose, rest = split_prose(iter_documents([str(data / "text" / "cc-main-2019-30-en.jsonl.gz")]))
    return prose + rest, ["prose"] * len(prose) + ["lists"] * len(rest)


@pytest.fixture(scope="module")
def tiny(sample_models) -> tuple[Path, dict]:
    """The stand-in domain classifier scripts/train_sample_models.sh trains with
    `refine train-classifier --base tiny` on those two label sets (held-out metrics beside it)."""
    folder = sample_models / "sample-domain"
    return folder, json.loads((folder / "training.json").read_text())


@pytest.fixture(scope="module")
def regressor(labelled, tmp_path_factory) -> Path:
    """A regression head (one output) on a tiny BERT created from its config: random weights."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    texts, _ = labelled
    out = tmp_path_factory.mktemp("tiny-regressor")
    tok = train_tokenizer(texts[:200], 2000)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        num_labels=1,
        problem_type="regression",
        pad_token_id=tok.pad_token_id,
    )
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _table(texts: list[str]) -> pa.Table:
    return pa.table({"id": [f"d{i:04d}" for i in range(len(texts))], "text": texts})


def _stage(model: Path, **params) -> ModelClassifier:
    s = ModelClassifier(ModelClassifierParams(model=str(model), device="cpu", **params))
    s.check()
    return s


def test_tiny_encoder_separates_held_out_documents(tiny):
    _, metrics = tiny
    assert metrics["kind"] == "classification" and metrics["labels"] == ["lists", "prose"]
    assert metrics["holdout_documents"] >= 100
    # well above chance: the majority label is ~54% of the held-out documents
    assert metrics["holdout_accuracy"] >= metrics["majority_baseline"] + 0.15, metrics


def test_scores_identical_across_partitions_and_batches(tiny, labelled):
    folder, _ = tiny
    texts = labelled[0][:120]
    st = _stage(folder, label_column="domain", probabilities=True, precision="fp32")
    whole = st.score(_table(texts))
    # four partitions, in another order: every document gets bit-identical signals
    order = np.random.default_rng(0).permutation(len(texts))
    parts = [order[i::4] for i in range(4)]
    for part in parts:
        got = st.score(_table([texts[i] for i in part]))
        for name, col in whole.items():
            assert got[name].to_pylist() == col.take(pa.array(part)).to_pylist(), name
    # other batch sizes: bit-identical in fp32 (refine.encoders.pad_small_linears)
    for batch_size in (1, 5):
        other = _stage(
            folder, label_column="domain", probabilities=True, precision="fp32",
            batch_size=batch_size,
        ).score(_table(texts))  # fmt: skip
        for name, col in whole.items():
            assert other[name].to_pylist() == col.to_pylist(), (batch_size, name)


def test_bf16_scores_close_to_fp32(tiny, labelled):
    folder, _ = tiny
    texts = labelled[0][:40]
    fp32 = _stage(folder, precision="fp32").score(_table(texts))["model_score"].to_numpy()
    st = _stage(folder, precision="bf16")
    bf16 = st.score(_table(texts))["model_score"].to_numpy()
    assert np.abs(fp32 - bf16).max() < 0.02
    # bf16 too gives every document the same score whatever partition it is in (fixed shapes;
    # across batch sizes bf16 kernels differ in the last bits, so only fp32 is identical there)
    halves = [st.score(_table(texts[i::2]))["model_score"].to_numpy() for i in (0, 1)]
    assert np.array_equal(halves[0], bf16[0::2]) and np.array_equal(halves[1], bf16[1::2])


def test_label_thresholds_and_probabilities(tiny, labelled):
    folder, _ = tiny
    texts, labels = labelled
    sample = texts[:30] + texts[-30:]
    st = _stage(folder, label_column="domain", probabilities=True, keep_labels=["prose"])
    result = st.process(_table(sample))
    log = result.log.to_pydict()
    probs = np.array(log["model_score_lists"]) + np.array(log["model_score_prose"])
    np.testing.assert_allclose(probs, 1.0, atol=1e-5)
    assert set(log["domain"]) <= {"prose", "lists"}
    for kept, label, reason in zip(log["kept"], log["domain"], log["reason"], strict=True):
        assert kept == (label == "prose")
        assert reason == (None if kept else "model_label_not_kept")
    assert result.stats.docs_out == sum(d == "prose" for d in log["domain"])


def test_regression_int_score_and_min_int_score(regressor, labelled):
    texts = labelled[0][:50]
    st = _stage(regressor, int_range=(0, 5), min_int_score=1, score_column="edu")
    result = st.process(_table(texts))
    log = result.log.to_pydict()
    score, ints = np.array(log["edu"]), np.array(log["edu_int"])
    np.testing.assert_array_equal(ints, np.rint(np.clip(score, 0, 5)))
    for kept, i in zip(log["kept"], ints, strict=True):
        assert kept == (i >= 1)


def test_check_refuses_wrong_labels_and_regression_options(tiny, regressor):
    folder, _ = tiny
    with pytest.raises(ConfigError, match="not one of"):
        _stage(folder, keep_labels=["maths"])
    with pytest.raises(ConfigError, match="regression model"):
        _stage(regressor, label_column="domain")
    with pytest.raises(ConfigError, match="config.json"):
        _stage(folder.parent)
    with pytest.raises(ConfigError, match="not a folder"):
        _stage(Path("no/such/place/here"))


def test_hub_id_through_local_hub(tiny, labelled, tmp_path, monkeypatch):
    folder, _ = tiny
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    texts = labelled[0][:20]
    local = _stage(folder).score(_table(texts))["model_score"].to_pylist()
    with HubStub() as hub:
        hub.add_files("refine-test/tiny-classifier", files)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        import huggingface_hub.constants as c

        monkeypatch.setattr(c, "ENDPOINT", hub.url)
        monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(
            c, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        from refine.encoders import _hub_snapshot

        _hub_snapshot.cache_clear()
        st = ModelClassifier(
            ModelClassifierParams(model="refine-test/tiny-classifier", device="cpu")
        )
        st.check()
        assert Path(st.folder()).is_relative_to(tmp_path / "hf-cache")
        assert st.score(_table(texts))["model_score"].to_pylist() == local
        assert any("/resolve/" in p and "tiny-classifier" in p for _, p in hub.requests)


def test_device_cuda_refused_in_one_line_without_gpu(tiny, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: device: cuda is valid here")
    folder, _ = tiny
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "some words here"}) + "\n")
    cfg = write_config(
        tmp_path / "c.yaml",
        [str(src)],
        tmp_path / "out",
        f"  - read: {{}}\n  - model_classifier: {{model: {json.dumps(str(folder))}, "
        "device: cuda}\n",
    )
    r = run_cli("run", str(cfg), "--no-progress")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "device: cuda" in lines[0] and "no GPU" in lines[0], r.stderr


def _jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"doc-{i:04d}", "text": t}) + "\n")
    return path


def test_resource_placement_on_workers_that_declare_it(tiny, labelled, tmp_path):
    """Only the worker started with GPU=1 (a CPU worker that declares the resource) runs the
    model_classifier parts; the rest of the pipeline runs anywhere, workers in another folder."""
    folder, _ = tiny
    src = _jsonl(tmp_path / "docs.jsonl", labelled[0][:200])
    stages = (
        "  - read: {slice_mb: 0.05}\n"
        "  - gopher_repetition: {}\n"
        f"  - model_classifier: {{model: {json.dumps(str(folder))}, device: cpu, "
        "resources: {GPU: 1}, label_column: domain}\n"
        "  - dedup_exact: {}\n"
    )
    cfg = write_config(tmp_path / "c.yaml", [str(src)], tmp_path / "out", stages)
    elsewhere = tmp_path / "worker-dir"
    elsewhere.mkdir()
    with dask_cluster(2, cwd=elsewhere, worker_args=[[], ["--resources", "GPU=1"]]) as (addr, _):
        from distributed import Client

        with Client(addr) as c:
            gpu_worker = next(
                a for a, w in c.scheduler_info()["workers"].items() if w["resources"].get("GPU")
            )
        r = run_cli("run", str(cfg), "--scheduler", addr, "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    rep = report(out)
    assert stage(rep, "model_classifier")["docs_in"] == stage(rep, "gopher_repetition")["docs_out"]
    layout = OutputLayout(str(out))
    markers = sorted(layout.done_marker("02_model_classifier", "x").parent.glob("*.json"))
    assert markers
    assert {json.loads(p.read_text())["worker"] for p in markers} == {gpu_worker}
    domains = pq.read_table(out / "stages" / "02_model_classifier")["domain"].to_pylist()
    assert set(domains) <= {"prose", "lists"} and domains


def test_resources_no_worker_declares_refused(tiny, labelled, tmp_path):
    folder, _ = tiny
    src = _jsonl(tmp_path / "docs.jsonl", labelled[0][:5])
    stages = (
        "  - read: {}\n"
        f"  - model_classifier: {{model: {json.dumps(str(folder))}, device: cpu, "
        "resources: {GPU: 1}}\n"
    )
    cfg = write_config(tmp_path / "c.yaml", [str(src)], tmp_path / "out", stages)
    r = run_cli("run", str(cfg), "--workers", "1", "--no-progress", timeout=300)
    assert r.returncode != 0
    assert "GPU=1" in r.stderr and "none of the cluster's 1 workers" in r.stderr, r.stderr[-2000:]


def test_train_classifier_cli(labelled, tmp_path):
    texts, labels = labelled
    src = tmp_path / "labelled.jsonl"
    with open(src, "w") as f:
        for t, lab in zip(texts[:60] + texts[-60:], labels[:60] + labels[-60:], strict=True):
            f.write(json.dumps({"text": t, "kind": lab}) + "\n")
    out = tmp_path / "model"
    r = run_cli(
        "train-classifier",
        "--text",
        str(src),
        "--labels",
        "kind",
        "--base",
        "tiny",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--max-length",
        "64",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "training.json").read_text())
    assert metrics["documents"] == 120 and metrics["labels"] == ["lists", "prose"]
    assert "holdout_accuracy" in metrics and metrics["holdout_documents"] == 12
    st = _stage(out, label_column="kind")
    got = st.score(_table(texts[:3]))
    assert len(got["kind"]) == 3
    # labels from a file, one per line; a missing label field names the file and line
    lab_file = tmp_path / "labels.txt"
    lab_file.write_text("\n".join(labels[:60] + labels[-60:]) + "\n")
    r = run_cli(
        "train-classifier",
        "--text",
        str(src),
        "--labels",
        str(lab_file),
        "--base",
        "tiny",
        "--out",
        str(tmp_path / "model2"),
        "--epochs",
        "1",
        "--max-length",
        "64",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # the same documents and labels in another process: the same tokenizer and weights, byte
    # for byte (HF's WordPiece trainer gave another vocabulary each run: tokenizers#1794)
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (out / name).read_bytes() == (tmp_path / "model2" / name).read_bytes(), name
    r = run_cli(
        "train-classifier",
        "--text",
        str(src),
        "--labels",
        "nope",
        "--base",
        "tiny",
        "--out",
        str(tmp_path / "model3"),
    )
    assert r.returncode == 2 and "labelled.jsonl#line=1" in r.stderr and "'nope'" in r.stderr


def test_read_records_parquet(tmp_path):
    pq.write_table(
        pa.table({"text": ["a b", "", "c d"], "y": [1.0, 2.0, 3.5]}), tmp_path / "x.parquet"
    )
    recs = read_records([str(tmp_path / "x.parquet")], "text", "y")
    assert recs == [{"text": "a b", "label": 1.0}, {"text": "c d", "label": 3.5}]
    assert os.path.exists(tmp_path / "x.parquet")


def test_plan_shows_the_workers_a_stage_needs(tiny, tmp_path):
    folder, _ = tiny
    src = _jsonl(tmp_path / "docs.jsonl", ["one document here"])
    stages = (
        "  - read: {}\n"
        f"  - model_classifier: {{model: {json.dumps(str(folder))}, device: cpu, "
        "resources: {GPU: 1}}\n"
        "  - dedup_exact: {}\n"
    )
    cfg = write_config(tmp_path / "c.yaml", [str(src)], tmp_path / "out", stages)
    r = run_cli("plan", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    plan = {s["name"]: s for s in json.loads(r.stdout)["stages"]}
    assert plan["model_classifier"]["resources"] == {"GPU": 1}
    assert plan["dedup_exact"]["resources"] == {} and plan["read"]["resources"] == {}
    assert plan["model_classifier"]["sources"]["model"] == f"local folder: {folder}"
    r = run_cli("plan", str(cfg))
    assert "runs only on Dask workers with resources GPU=1" in r.stdout
