"""Versions of the code that decides what a run outputs.

trafilatura 2.0.0 / 2.1.0 / 2.2.0 / 2.3.1 extract 631 / 632 / 639 / 691 non-empty pages of the
same 698 with identical options: a run killed under one version and resumed under another would
mix their outputs. So ``report.json`` records refine's version (with its git commit when run
from a checkout) and the libraries whose output matters, and a stage lists the libraries its
output depends on (``Stage.libraries``): their versions enter its fingerprint, and a resume under
other versions recomputes that stage and what follows it.

Versions come from installed package metadata (``importlib.metadata``): nothing is imported.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from functools import cache, lru_cache
from pathlib import Path

import refine

#: library -> the distributions that provide it (the first one installed counts)
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "trafilatura": ("trafilatura",),
    "lxml": ("lxml",),
    "resiliparse": ("resiliparse",),
    "fasttext": ("fasttext-numpy2-wheel", "fasttext", "fasttext-wheel", "fasttext-predict"),
    "kenlm": ("kenlm",),
    "sentencepiece": ("sentencepiece",),
    "datasketch": ("datasketch",),
    "tokenizers": ("tokenizers",),
    "pyarrow": ("pyarrow",),
    "dask": ("dask",),
    "distributed": ("distributed",),
    "orjson": ("orjson",),
    "zstandard": ("zstandard",),
    "huggingface_hub": ("huggingface_hub", "huggingface-hub"),
    "regex": ("regex",),
    "numpy": ("numpy",),
    # the words of each language: spaCy's rules by datatrove's table, and the segmenters
    "spacy": ("spacy",),
    "datatrove": ("datatrove",),
    "rjieba": ("rjieba",),
    "sudachipy": ("SudachiPy", "sudachipy"),
}

#: What ``report.json`` lists under ``versions``.
REPORTED = tuple(_DISTRIBUTIONS)


@cache
def library_version(name: str) -> str | None:
    """The installed version of ``name`` (a key of the table above, or a distribution name);
    None when it is not installed."""
    if name == "python":
        return platform.python_version()
    if name == "refine":
        return refine_version()
    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@lru_cache(maxsize=1)
def refine_version() -> str:
    """``0.1.0``, or ``0.1.0+g<commit>`` (``.dirty`` with uncommitted changes) when refine runs
    from a git checkout."""
    base = refine.__version__
    root = Path(refine.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return base
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "refine"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{commit}{'.dirty' if dirty else ''}" if commit else base


def versions_report() -> dict[str, str | None]:
    """refine, python and every library of ``REPORTED`` (None: not installed)."""
    out: dict[str, str | None] = {"refine": refine_version(), "python": library_version("python")}
    out.update({name: library_version(name) for name in REPORTED})
    return out
