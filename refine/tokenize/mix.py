"""``mix``: set the data mix, the share of each group (a label column: ``domain``, a quality
bucket) in what the trainer sees, as Llama 3 did (about 50% general knowledge, 25% math and
reasoning, 17% code, 8% multilingual) and Nemotron-CC does with quality buckets.

Each group ``g`` has a target share ``w_g`` (``weights``, normalised to sum to 1) of a total
``budget`` in documents or tokens (``unit``). Without a budget the mix only samples down: the
total is the largest one every group can fill with its documents used once
(``min_g available_g / w_g``). A group's rate ``r_g = w_g * budget / available_g`` is how many
times, on average, each of its documents appears: below 1 the group is sampled down, above 1 its
documents are repeated, never more than ``max_repeats`` times each (a group that would need more
is capped and reported as such: ``capped: true``, its achieved share below its target).

Which documents: every document gets a uniform number ``u`` from a keyed hash of
``(seed, id, repeat)``. A document appears ``floor(r_g)`` times, plus once more for the
fractional part of ``r_g``: the documents of the group in ``u`` order up to that amount of
documents or tokens. Per-group histograms of ``u`` (4096 bins, summed on the driver) give the bins
taken whole; in a small window of bins after them documents are picked one by one, each one that
brings the amount closer to the target (in tokens a long document that would overshoot is passed
over for shorter ones). So the achieved amounts equal the targets to the nearest document, and the
result depends only on the documents, the seed and the params, never on partitioning or the
number of workers; no step holds the corpus.

Copies keep their ``id`` and get a ``repeat`` index (as ``rehydrate``'s), so ``shuffle`` spreads
them apart and the trainer sees them as repeats. Stats: ``mix_downsampled`` (documents left out),
``mix_not_in_weights`` (a label without a weight, or none), ``repeats`` (extra copies). The
summary (target vs achieved shares, documents and tokens) goes into report.json (``mix``) and the
tokens' manifest.json (``mix``). Tokens are counted with ``tokenizer`` (the tokenize stage's
default), each document's text tokens plus its EOS.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from refine.errors import ConfigError
from refine.pipeline.gather import map_folded, map_list
from refine.pipeline.stage import (
    GlobalContext,
    GlobalStage,
    StageParams,
    decision_log,
    text_bytes,
)
from refine.pipeline.stats import ADDED_COUNTER, StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_parquet_atomic
from refine.tokenize.tokenizer import GPT2_SPEC

REPEAT_COLUMN = "repeat"
#: Histogram bins of ``u`` per group (the boundary bin's values are then read exactly).
BINS = 4096


class MixParams(StageParams):
    by: str = Field(description="the label column that names each document's group (e.g. domain)")
    weights: dict[str, float] = Field(
        description="target share per group (normalised to sum to 1), e.g. {general: 0.5, "
        "math: 0.25, code: 0.17, multilingual: 0.08}",
        min_length=1,
    )
    unit: Literal["documents", "tokens"] = Field(
        default="tokens", description="what the shares and the budget count"
    )
    budget: int | None = Field(
        default=None,
        ge=1,
        description="total documents or tokens to write (default: sample down only, the most "
        "every group can fill without repeats)",
    )
    max_repeats: int = Field(
        default=4,
        ge=1,
        description="the most times one document may appear (4: repeating up to ~4 epochs costs "
        "little, Muennighoff et al. 2023)",
    )
    seed: int = Field(default=0, description="which documents are picked or repeated")
    tokenizer: str = Field(
        default=GPT2_SPEC, description="counts tokens (the tokenize stage's tokenizer spec)"
    )

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w > 0}
        if bad:
            raise ValueError(f"weights must be > 0: {bad}")
        return v


class Mix(GlobalStage):
    """Target shares per group (``by``) of a token or document budget: samples down
    over-represented groups, repeats under-represented ones up to ``max_repeats``."""

    name = "mix"
    Params = MixParams
    path_params = ("tokenizer",)
    libraries = ("tokenizers",)

    def check(self) -> None:
        from refine.tokenize.tokenizer import load_tokenizer

        try:
            load_tokenizer(self.params.tokenizer)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"mix: tokenizer {self.params.tokenizer!r}: {e}") from None

    def shares(self) -> dict[str, float]:
        total = sum(self.params.weights.values())
        return {g: w / total for g, w in sorted(self.params.weights.items())}

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        p = self.params
        parts = [str(x) for x in list_parts(Path(ctx.input_dir))]
        work = Path(ctx.work_dir)
        remove_tree(work)
        client = ctx.client
        groups = sorted(p.weights)
        n = len(parts)
        hist = {"docs": np.zeros((len(groups), BINS)), "tokens": np.zeros((len(groups), BINS))}
        totals = {"docs": np.zeros(len(groups)), "tokens": np.zeros(len(groups))}
        others = {"docs": 0, "tokens": 0}

        def fold_scan(d: dict) -> None:
            for unit in ("docs", "tokens"):
                hist[unit] += d[f"hist_{unit}"]
                totals[unit] += d[f"hist_{unit}"].sum(axis=1)
                others[unit] += d[f"other_{unit}"]

        map_folded(
            client,
            _scan,
            parts,
            [str(work)] * n,
            [p.by] * n,
            [groups] * n,
            [p.seed] * n,
            [p.tokenizer] * n,
            fold=fold_scan,
        )
        unit = "tokens" if p.unit == "tokens" else "docs"
        available = totals[unit]
        shares = self.shares()
        weights = np.array([shares[g] for g in groups])
        if p.budget is not None:
            budget = float(p.budget)
        else:
            # a group with no documents at all cannot limit the others (it is reported as
            # capped, with nothing achieved), else one empty group would empty the whole mix
            with np.errstate(divide="ignore"):
                budget = float(np.min(np.where(available > 0, available / weights, np.inf)))
            budget = 0.0 if not np.isfinite(budget) else budget
        target = weights * budget
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(available > 0, target / available, 0.0)
        capped = (rate > p.max_repeats) | ((available == 0) & (target > 0))
        rate = np.minimum(rate, p.max_repeats)
        whole = np.floor(rate).astype(np.int64)
        frac = rate - whole
        # the share of the group's documents (or tokens) that gets one more copy, as an amount
        extra = frac * available
        bound, inner, end = _boundary_bins(hist[unit], extra)
        boundary = map_list(
            client,
            _boundary_values,
            [str(work / f"{Path(x).stem}.parquet") for x in parts],
            [bound.tolist()] * n,
            [end.tolist()] * n,
        )
        theta, picked = _thresholds(boundary, bound, inner, len(groups))
        stats = StageStats(name=self.name)
        out_docs = np.zeros(len(groups))
        out_tokens = np.zeros(len(groups))

        def fold_apply(d: dict) -> None:
            nonlocal stats
            stats = stats + StageStats.from_dict(d["stats"])
            out_docs[:] += d["docs"]
            out_tokens[:] += d["tokens"]

        map_folded(
            client,
            _apply,
            parts,
            [str(work)] * n,
            [ctx.output_dir] * n,
            [ctx.log_dir] * n,
            [p.by] * n,
            [whole.tolist()] * n,
            [theta.tolist()] * n,
            [picked] * n,
            [p.max_repeats] * n,
            fold=fold_apply,
        )
        stats.summary = self._summary(
            groups, shares, totals, out_docs, out_tokens, capped, rate, budget, others
        )
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0
        remove_tree(work)
        return stats

    def _summary(
        self,
        groups: list[str],
        shares: dict[str, float],
        totals: dict[str, np.ndarray],
        out_docs: np.ndarray,
        out_tokens: np.ndarray,
        capped: np.ndarray,
        rate: np.ndarray,
        budget: float,
        others: dict[str, int],
    ) -> dict[str, Any]:
        p = self.params
        docs_all, tokens_all = float(out_docs.sum()), float(out_tokens.sum())
        rows = {}
        for i, g in enumerate(groups):
            rows[g] = {
                "target_share": round(shares[g], 6),
                "achieved_share_documents": round(out_docs[i] / docs_all, 6) if docs_all else 0.0,
                "achieved_share_tokens": round(out_tokens[i] / tokens_all, 6)
                if tokens_all
                else 0.0,
                "available_documents": int(totals["docs"][i]),
                "available_tokens": int(totals["tokens"][i]),
                "documents": int(out_docs[i]),
                "tokens": int(out_tokens[i]),
                "rate": round(float(rate[i]), 6),
                "capped": bool(capped[i]),
            }
        return {
            "by": p.by,
            "unit": p.unit,
            "budget": p.budget,
            "total": int(round(budget)),
            "max_repeats": p.max_repeats,
            "seed": p.seed,
            "tokenizer": p.tokenizer,
            "documents": int(docs_all),
            "tokens": int(tokens_all),
            "not_in_weights": {"documents": others["docs"], "tokens": others["tokens"]},
            "groups": rows,
        }


def draw(ids: list[str | None], repeats: list[int] | None, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per document: BLAKE2b of ``(id, repeat)`` keyed by the seed
    (53 bits, exact in a float64)."""
    salt = b"mix" + seed.to_bytes(13, "little", signed=True)
    reps = repeats if repeats is not None else [0] * len(ids)
    out = np.empty(len(ids), dtype=np.float64)
    for i, (doc, r) in enumerate(zip(ids, reps, strict=True)):
        name = (doc or "").encode("utf-8", "surrogatepass") + b"\x00" + str(r or 0).encode()
        h = int.from_bytes(hashlib.blake2b(name, digest_size=8, key=salt).digest(), "little")
        out[i] = (h >> 11) / float(1 << 53)
    return out


def _scan(
    part: str, work: str, by: str, groups: list[str], seed: int, tokenizer: str
) -> dict[str, Any]:
    """Phase 1, one input part: each document's group, tokens and ``u`` (a work file) and the
    part's per-group histograms of ``u`` (documents and tokens per bin)."""
    from refine.tokenize.tokenizer import load_tokenizer

    names = pq.read_schema(part).names
    if by not in names:
        raise ConfigError(
            f"mix: {Path(part).name} has no {by!r} column (put the stage that writes it, e.g. "
            f"model_classifier with label_column: {by}, before mix)"
        )
    cols = [c for c in ("id", "text", by, REPEAT_COLUMN) if c in names]
    table = pq.read_table(part, columns=cols)
    n = table.num_rows
    labels = pc.cast(table[by], pa.string()).to_pylist()
    index = {g: i for i, g in enumerate(groups)}
    group = np.array([index.get(x, -1) if x is not None else -1 for x in labels], dtype=np.int64)
    texts = pc.fill_null(table["text"], "").to_pylist() if "text" in cols else [""] * n
    tok = load_tokenizer(tokenizer)
    tokens = np.zeros(n, dtype=np.int64)
    for start in range(0, n, 512):
        enc = tok.encode_batch(texts[start : start + 512], add_special_tokens=False)
        tokens[start : start + len(enc)] = [len(e.ids) + 1 for e in enc]  # + EOS
    ids = table["id"].to_pylist() if "id" in cols else [None] * n
    repeats = table[REPEAT_COLUMN].to_pylist() if REPEAT_COLUMN in cols else None
    u = draw(ids, repeats, seed)
    write_parquet_atomic(
        pa.table(
            {
                "group": pa.array(group, pa.int32()),
                "tokens": pa.array(tokens, pa.int64()),
                "u": pa.array(u, pa.float64()),
            }
        ),
        Path(work) / f"{Path(part).stem}.parquet",
    )
    bins = np.minimum((u * BINS).astype(np.int64), BINS - 1)
    known = group >= 0
    flat = group[known] * BINS + bins[known]
    size = len(groups) * BINS
    return {
        "hist_docs": np.bincount(flat, minlength=size).reshape(len(groups), BINS).astype(float),
        "hist_tokens": np.bincount(flat, weights=tokens[known], minlength=size).reshape(
            len(groups), BINS
        ),
        "other_docs": int((~known).sum()),
        "other_tokens": int(tokens[~known].sum()),
    }


def _boundary_bins(
    hist: np.ndarray, extra: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: the first bin ``b`` where the running amount passes ``extra`` (-1: none
    needed), the amount still needed from bin ``b`` on, and the end ``e`` of a window of bins
    from ``b`` holding at least three times that amount (or the rest of the group): every bin
    below ``b`` is taken whole, the window's documents are picked one by one."""
    n_groups, n_bins = hist.shape
    bound = np.full(n_groups, -1, dtype=np.int64)
    end = np.zeros(n_groups, dtype=np.int64)
    inner = np.zeros(n_groups)
    for g, need in enumerate(extra):
        if need <= 0:
            continue
        cum = np.cumsum(hist[g])
        b = min(int(np.searchsorted(cum, need, side="right")), n_bins - 1)
        before = cum[b - 1] if b > 0 else 0.0
        bound[g], inner[g] = b, need - before
        e = int(np.searchsorted(cum, before + 3 * inner[g], side="left")) + 1
        end[g] = min(max(e, b + 1), n_bins)
    return bound, inner, end


def _boundary_values(
    work_file: str, bound: list[int], end: list[int]
) -> list[tuple[int, float, int]]:
    """Phase 2, one part: (group, u, tokens) of its documents in their group's window."""
    t = pq.read_table(work_file)
    group = t["group"].to_numpy()
    u = t["u"].to_numpy()
    tokens = t["tokens"].to_numpy()
    bins = np.minimum((u * BINS).astype(np.int64), BINS - 1)
    known = group >= 0
    g = np.where(known, group, 0)
    lo, hi = np.asarray(bound)[g], np.asarray(end)[g]
    hit = np.flatnonzero(known & (lo >= 0) & (bins >= lo) & (bins < hi))
    return [(int(group[i]), float(u[i]), int(tokens[i])) for i in hit]


def _thresholds(
    boundary: list[list[tuple[int, float, int]]],
    bound: np.ndarray,
    inner: np.ndarray,
    n_groups: int,
) -> tuple[np.ndarray, list[list[float]]]:
    """Per group, ``theta`` (documents with ``u < theta`` get one more copy: the bins below
    the window) and the ``u`` of the window's documents that get one too: in ``u`` order each
    one that still fits in ``inner`` (a long document that would overshoot is passed over for
    shorter ones after it), then the first passed-over one that brings the amount closer, if
    any. In documents this is the nearest whole number; in tokens, it is within half a
    document of the target."""
    theta = np.zeros(n_groups)
    picked: list[list[float]] = [[] for _ in range(n_groups)]
    values: list[list[tuple[float, int]]] = [[] for _ in range(n_groups)]
    for part in boundary:
        for g, u, tok in part:
            values[g].append((u, tok))
    for g in range(n_groups):
        if bound[g] < 0:
            continue
        theta[g] = bound[g] / BINS  # exact: BINS is a power of two
        got = 0.0
        rest = []
        for u, tok in sorted(values[g]):  # documents that fit
            if got + tok <= inner[g]:
                picked[g].append(u)
                got += tok
            else:
                rest.append((u, tok))
        for u, tok in rest:  # then the first one that brings the amount closer, if any
            if got + tok / 2 < inner[g]:
                picked[g].append(u)
                break
    return theta, picked


def _apply(
    part: str,
    work: str,
    output_dir: str,
    log_dir: str,
    by: str,
    whole: list[int],
    theta: list[float],
    picked: list[list[float]],
    max_repeats: int,
) -> dict[str, Any]:
    """Phase 3, one part: each document written ``copies`` times (0: left out), copies after
    the first with a ``repeat`` index; its decision log (``mix_group``, ``mix_copies``)."""
    t0, c0 = time.perf_counter(), time.process_time()
    table = pq.read_table(part)
    w = pq.read_table(Path(work) / f"{Path(part).stem}.parquet")
    group = w["group"].to_numpy()
    u = w["u"].to_numpy()
    tokens = w["tokens"].to_numpy()
    n = table.num_rows
    known = group >= 0
    g = np.where(known, group, 0)
    one_more = u < np.asarray(theta)[g]
    for j, values in enumerate(picked):
        if values:
            one_more |= (group == j) & np.isin(u, np.asarray(values))
    copies = np.where(known, np.asarray(whole, dtype=np.int64)[g] + one_more, 0).astype(np.int64)
    copies = np.minimum(copies, max_repeats)
    reasons = np.where(~known, "mix_not_in_weights", np.where(copies == 0, "mix_downsampled", None))
    rows = np.repeat(np.arange(n), copies)
    first = np.concatenate([[0], np.cumsum(copies)[:-1]]) if n else np.zeros(0, np.int64)
    k = np.arange(len(rows)) - np.repeat(first, copies)  # 0 for the first copy
    out = table.take(pa.array(rows, pa.int64()))
    old = (
        table[REPEAT_COLUMN].to_numpy(zero_copy_only=False).astype(np.int64)
        if REPEAT_COLUMN in table.column_names
        else np.zeros(n, np.int64)
    )
    new_repeat = old[rows] * max_repeats + k  # unique per id even after rehydrate's copies
    if REPEAT_COLUMN in out.column_names:
        out = out.set_column(
            out.column_names.index(REPEAT_COLUMN), REPEAT_COLUMN, pa.array(new_repeat, pa.int32())
        )
    elif (new_repeat > 0).any():
        out = out.append_column(REPEAT_COLUMN, pa.array(new_repeat, pa.int32()))
    write_parquet_atomic(out, Path(output_dir) / Path(part).name)
    kept = pa.array(copies > 0)
    log = decision_log(
        table,
        kept,
        pa.array(reasons.tolist(), pa.string()),
        None,
        {
            "mix_group": pc.cast(table[by], pa.string()),
            "mix_copies": pa.array(copies, pa.int32()),
        },
    )
    write_parquet_atomic(log, Path(log_dir) / Path(part).name)
    stats = StageStats(name="mix", parts=1, docs_in=n, docs_out=int(copies.sum()))
    stats.bytes_in = text_bytes(table)
    stats.bytes_out = text_bytes(out)
    for reason in ("mix_not_in_weights", "mix_downsampled"):
        c = int((reasons == reason).sum())
        if c:
            stats.drop(reason, c)
    stats.counters[ADDED_COUNTER] = int(np.maximum(copies - 1, 0).sum())
    stats.seconds = time.perf_counter() - t0
    stats.cpu_seconds = time.process_time() - c0
    n_groups = len(whole)
    docs = np.bincount(group[known], weights=copies[known], minlength=n_groups)
    toks = np.bincount(group[known], weights=(copies * tokens)[known], minlength=n_groups)
    return {"stats": stats.to_dict(), "docs": docs, "tokens": toks}
