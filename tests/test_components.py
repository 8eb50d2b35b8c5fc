"""Distributed connected components (``refine/dedup/components.py``): the labels equal scipy's
union-find at any partition count, long chains converge in O(log n) rounds, a hub's messages
are combined per state file, and stopping early leaves more survivors, never wrong ones."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from refine.dedup import components
from refine.dedup.components import connected_components
from refine.dedup.minhash import components_labels


@pytest.fixture(scope="module")
def client():
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def _name(i: int) -> str:
    """Names that do not sort in the order they are numbered, with NUL bytes (as the stage's
    ``id NUL part NUL row`` node names) and non-ASCII ids."""
    h = hashlib.sha1(str(i).encode()).hexdigest()[:10]
    return [f"{h}\x00p\x00{i:06d}", f"é{h}", f"\u4e2d{h}\x00{i}", h][i % 4]


def _write_edges(folder: Path, edges: list[tuple[str, str]], files: int = 3) -> Path:
    folder.mkdir(parents=True)
    for k in range(files):
        chunk = edges[k::files]
        table = pa.table(
            {
                "a": pa.array([a for a, _ in chunk], pa.string()),
                "b": pa.array([b for _, b in chunk], pa.string()),
            }
        )
        pq.write_table(table, folder / f"part-{k}.parquet")
    return folder


def _truth(edges: list[tuple[str, str]]) -> dict[str, str]:
    a, b = zip(*edges, strict=True)
    nodes, labels = components_labels(pa.array(a, pa.string()), pa.array(b, pa.string()))
    return dict(zip(nodes.to_pylist(), labels.to_pylist(), strict=True))


def _run(tmp: Path, edges, npartitions: int, max_iterations: int = 50, files: int = 3):
    edges_dir = _write_edges(tmp / "edges", edges, files)
    labels_dir, result = connected_components(edges_dir, tmp / "cc", npartitions, max_iterations)
    got = pq.read_table(labels_dir).to_pydict()
    labels = dict(zip(got["node"], got["label"], strict=True))
    assert len(labels) == len(got["node"])  # one row per node
    # only the labels are left under work: every round's state and the finished parts are gone
    assert [p.name for p in (tmp / "cc").iterdir()] == [labels_dir.name]
    return labels, result


def _random_graph(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Many components, some big: random edges inside groups (n/4, n/10, then 2 to 30 nodes),
    chains, stars, a self-loop, repeated and reversed edges."""
    ids = list(range(n))
    rng.shuffle(ids)
    edges: list[tuple[int, int]] = []
    at, sizes = 0, [n // 4, n // 10]
    while at < n:
        size = min(n - at, sizes.pop() if sizes else rng.choice([2, 2, 2, 3, 3, 5, 8, 30]))
        if size < 2:
            break
        group = ids[at : at + size]
        at += size
        shape = rng.random()
        if shape < 0.3:
            edges += list(itertools.pairwise(group))
        elif shape < 0.5:
            edges += [(group[0], m) for m in group[1:]]
        else:
            edges += list(itertools.pairwise(group))[: size // 2]
            edges += [tuple(rng.sample(group, 2)) for _ in range(size)]
    edges += [(ids[0], ids[0]), edges[0], edges[1][::-1]]
    rng.shuffle(edges)
    return [(_name(a), _name(b)) for a, b in edges]


def test_a_long_chain_converges_in_logarithmic_rounds(tmp_path, client):
    """2,000 near-duplicates in a chain, names in no particular order: min-label propagation
    needs a round per hop from the smallest name (hundreds; 50 rounds left 183 survivors of a
    1,000-chain); contraction finishes in O(log n)."""
    n = 2000
    edges = [(_name(i), _name(i + 1)) for i in range(n - 1)]
    labels, result = _run(tmp_path, edges, npartitions=4)
    smallest = min(_name(i) for i in range(n))
    assert result.converged and result.nodes == n
    assert set(labels) == {_name(i) for i in range(n)}
    assert set(labels.values()) == {smallest}
    hops = abs(min(range(n), key=_name) - n // 2) + n // 2  # the old algorithm's rounds
    assert result.iterations <= 2 * math.log2(n) + 4 < hops


def test_a_chain_in_name_order_converges_too(tmp_path, client):
    """The worst order for names-as-priorities (each node's smallest neighbour is the previous
    one: round 1 merges one pair); the random priorities of the later rounds do the work."""
    n = 1000
    names = [f"doc-{i:05d}" for i in range(n)]
    labels, result = _run(tmp_path, list(itertools.pairwise(names)), npartitions=3)
    assert result.converged and set(labels.values()) == {"doc-00000"}
    assert result.iterations <= 2 * math.log2(n) + 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_graphs_equal_scipy_components(tmp_path, client, seed):
    rng = random.Random(seed)
    edges = _random_graph(rng, 1200)
    truth = _truth(edges)
    assert (
        len(set(truth.values())) > 20
        and max(list(truth.values()).count(v) for v in set(truth.values())) >= 100
    )
    labels, result = _run(tmp_path, edges, npartitions=3)
    assert result.converged and result.nodes == len(truth)
    assert labels == truth


def test_a_hub_sends_one_message_per_state_file(tmp_path, client, monkeypatch):
    """A document near-duplicate to 50,000 others: one component; no task of any round
    receives the hub's 50,000 edges or messages, only one row per state file for it (the
    replaced code shuffled all its edges, then all its messages, into one task)."""
    leaves = 50_000
    hub = "8" * 10  # about half the (hex) leaves sort before it: not a one-round star
    edges = [(hub, hashlib.sha1(str(i).encode()).hexdigest()) for i in range(leaves)]
    npartitions = 8
    received: list[tuple[int, int]] = []  # (rows, most rows for one name) per reduce task
    answer, apply = components._answer, components._apply

    def counting_answer(df, *args):
        most = int(df["sv"].value_counts().max()) if len(df) else 0
        received.append((len(df), most))
        return answer(df, *args)

    def counting_apply(replies, *args, partition_info=None):
        received.append((len(replies), 0))
        return apply(replies, *args, partition_info=partition_info)

    monkeypatch.setattr(components, "_answer", counting_answer)
    monkeypatch.setattr(components, "_apply", counting_apply)
    labels, result = _run(tmp_path, edges, npartitions=npartitions, files=4)
    assert result.converged and result.nodes == leaves + 1
    assert set(labels.values()) == {min(min(b for _, b in edges), hub)}
    assert received and max(most for _, most in received) <= npartitions
    # a task gets its share of the names, not the hub's degree: at most one reply per name of
    # its state file plus (round 1) the memberships of the nodes assigned to it
    assert max(rows for rows, _ in received) <= 2.5 * leaves / npartitions < leaves / 3


@pytest.mark.parametrize("max_iterations", [1, 2])
def test_stopping_early_leaves_more_survivors_never_wrong_ones(tmp_path, client, max_iterations):
    rng = random.Random(11)
    chain = [(_name(i), _name(i + 1)) for i in range(10_000, 10_300)]
    edges = chain + _random_graph(rng, 600)
    truth = _truth(edges)
    labels, result = _run(tmp_path, edges, npartitions=3, max_iterations=max_iterations)
    assert not result.converged and result.iterations == max_iterations
    assert set(labels) == set(truth)
    for node, label in labels.items():
        assert truth[label] == truth[node]  # a node of its own component ...
        assert labels[label] == label  # ... that survives
    assert all(labels[m] == m for m in set(truth.values()))  # every true survivor survives
    survivors = {label for label in labels.values()}
    assert len(survivors) > len(set(truth.values()))  # the chain is left split
    assert len(survivors) < len(truth)


def test_labels_and_rounds_do_not_depend_on_partitioning(tmp_path, client):
    rng = random.Random(5)
    edges = _random_graph(rng, 900)
    truth = _truth(edges)
    runs = [
        _run(tmp_path / str(n), edges, npartitions=n, files=f) for n, f in [(1, 3), (3, 1), (8, 5)]
    ]
    for labels, result in runs:
        assert labels == truth and result.converged and result.nodes == len(truth)
    assert len({result.iterations for _, result in runs}) == 1
