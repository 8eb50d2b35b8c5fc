"""HTML -> main text, in a persistent child process with a per-document time limit.

Why a child process: Dask runs tasks in worker threads, where ``signal.alarm`` is unavailable, and
lxml/resiliparse C code cannot be interrupted from Python anyway. Why ``subprocess`` and not
``multiprocessing``: Dask worker processes are daemonic and multiprocessing refuses to start
children from them.

Protocol: the parent writes length-prefixed pickle frames to the child's stdin and reads frames
from its stdout. The first frame is the config; the child answers ``("ready", facts)`` once the
engine is loaded (or ``("error", message)``), where ``facts`` is a dict of what the engine runs
with, for the extract stage's report (trafilatura: ``SpeedupReport.summary``; else empty). Then
each request is ``(utf8_html, url, group)`` and each answer ``(text, reason, detail, seconds,
cpu_seconds)``, in order. The parent allows each document ``timeout`` seconds of wall clock,
counted from when the child could start it; past that it SIGKILLs the child and starts a fresh
one lazily. Inside the child a softer alarm (``signal.setitimer`` in its main thread) stops slow
*Python* code a little earlier, avoiding a restart in the common case.

Determinism: trafilatura's ``deduplicate`` keeps an LRU cache of paragraphs per process, so its
output depends on the documents the child saw before (in datatrove it is per worker, so results
change with scheduling). Each request carries a ``group`` (one per ``extract_many`` call, i.e. per
partition): the child empties the cache when the group changes, so a document's text depends only
on its partition, and a resumed or re-scheduled partition gives the same text. A child restart
(timeout, crash) also empties it.
"""

from __future__ import annotations

import fcntl
import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import pickle
import select
import signal
import site
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
import zipfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from refine.errors import ConfigError
from refine.models import DEFAULT_LID_MODEL, check_fasttext_model, fasttext_model
from refine.pipeline.params import StageParams

__all__ = [
    "ExtractConfig",
    "ExtractResult",
    "Extractor",
    "check_engine",
    "get_extractor",
]

BUILTIN_ENGINES = ("trafilatura", "resiliparse")

# The child's own alarm fires at this fraction of the hard timeout.
_SOFT_TIMEOUT_FRACTION = 0.9
# Documents sent ahead of the one being extracted (hides the round trip for fast engines).
_PIPELINE_DEPTH = 4
# ...but never more than this many bytes of HTML queued ahead.
_PIPELINE_MAX_BYTES = 8 << 20
_HEADER = struct.Struct("<Q")
_READ_CHUNK = 1 << 20
_PIPE_SIZE = 1 << 20


class ExtractConfig(StageParams):
    """How to extract text from HTML. Hashable: ``get_extractor`` caches one Extractor per config.

    This is also the ``extract`` stage's YAML schema (each attribute's docstring is its help).

    trafilatura options mirror datatrove 0.10's ``Trafilatura`` extractor, which calls
    ``extract(html, favor_precision=True, include_comments=False, deduplicate=True)`` and leaves
    ``include_tables`` at trafilatura's default (True). resiliparse options mirror datatrove's
    ``Resiliparse`` extractor and keep resiliparse's own names.
    """

    engine: str = "trafilatura"
    """"trafilatura", "resiliparse", or "module.path:function" with f(html, url) -> str | None."""
    timeout: float = Field(default=10.0, gt=0)
    """Wall-clock seconds allowed per document."""
    startup_timeout: float = Field(default=120.0, gt=0)
    """Seconds allowed for a child to start and import the engine (not counted per document)."""
    memory_limit_mb: int | None = Field(default=4096, ge=256)
    """Address-space cap (RLIMIT_AS) of the child in MiB; None for no cap. A document that
    exceeds it ends with reason "extract_crashed" and a fresh child. The trafilatura child uses
    ~85 MiB of address space at rest; raise or disable the cap for a custom engine that loads
    big models or starts threads (each thread's malloc arena reserves address space)."""

    # trafilatura
    favor_precision: bool = True
    favor_recall: bool = False
    include_comments: bool = False
    include_tables: bool = True
    deduplicate: bool = True
    fast: bool = False
    """Skip trafilatura's readability/justext fallbacks (faster, different output)."""
    speedups: bool | Literal["force"] = True
    """Run trafilatura with refine's output-preserving speedups (``refine.extract.
    trafilatura_speedups``: its element-selecting XPath as Python loops, regex XPath tests as
    plain XPath, a C element-class lookup, a one-pass outermost-match search, exact rewrites of a
    few hot passages): ~2x less CPU per page, the same text (tested page by page on the sample
    crawl). Only under the trafilatura and lxml versions they were tested with
    (``TESTED_VERSIONS``); under others trafilatura runs untouched, with a warning. "force":
    install them under any version (check the text yourself). False runs trafilatura untouched.
    report.json's extract entry says which: ``summary.trafilatura_speedups``."""
    output_format: Literal["txt", "markdown"] = "txt"
    """trafilatura output format: "txt" or "markdown"."""

    # language pre-filter (off by default: it changes which pages are extracted)
    prefilter_languages: tuple[str, ...] | None = None
    """Skip the engine on pages that are confidently in none of these languages (fastText on
    resiliparse's quick plain text of the page); they are dropped as "language_prefilter". For an
    English-only run, ["en"] extracts only the pages that can pass the language stage, saving the
    engine's time on the rest. Not output-equivalent: a page whose quick text is confidently
    another language but whose engine text would pass the language stage is lost (measured in
    docs/benchmarks.md). None: off."""
    prefilter_max_score: float = Field(default=0.05, gt=0, le=1)
    """Drop only when the wanted languages' summed probability on the quick text is below this."""
    prefilter_min_chars: int = Field(default=100, ge=0)
    """Quick texts shorter than this are not judged (the engine runs)."""
    prefilter_model: str = DEFAULT_LID_MODEL
    """fastText language model of the pre-filter (the language stage's default)."""

    def trafilatura_options(self) -> dict:
        """Keyword arguments of ``trafilatura.extract`` for this config (also the bench loops')."""
        return dict(
            favor_precision=self.favor_precision,
            favor_recall=self.favor_recall,
            include_comments=self.include_comments,
            include_tables=self.include_tables,
            deduplicate=self.deduplicate,
            fast=self.fast,
            output_format=self.output_format,
        )

    # resiliparse (extract_plain_text)
    main_content: bool = True
    preserve_formatting: bool = True
    list_bullets: bool = True
    alt_texts: bool = False
    links: bool = False
    form_fields: bool = False
    noscript: bool = False
    comments: bool = True
    """resiliparse: treat comment sections as main content (its default, and datatrove's)."""
    skip_elements: tuple[str, ...] | None = None
    """resiliparse: CSS selectors of elements to skip."""


class EngineDrop(Exception):
    """An engine's decision to drop a page for a reason of its own (not an error)."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass
class ExtractResult:
    """Outcome of one document.

    ``reason`` is None on success, else one of "no_text" (engine returned None or only
    whitespace), "extract_timeout", "extract_crashed" (the child died: segfault, OOM kill,
    MemoryError), "extract_error" (the engine raised; ``detail`` names the exception).
    """

    text: str | None
    reason: str | None
    detail: str | None
    seconds: float
    """Wall seconds spent extracting this document."""
    cpu_seconds: float = 0.0
    """CPU seconds the child spent on it (0 when the child was killed before answering)."""


# --------------------------------------------------------------------------- engines


def _resolve_custom(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"extract.engine: {spec!r} is not a known engine; use one of "
            f"{', '.join(BUILTIN_ENGINES)} or 'module.path:function'"
        )
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigError(
            f"extract.engine: cannot import module {module_name!r} for engine {spec!r}: "
            f"{type(e).__name__}: {e}"
        ) from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ConfigError(
                f"extract.engine: module {module_name!r} has no attribute {attr!r} "
                f"(engine {spec!r})"
            ) from e
    if not callable(obj):
        raise ConfigError(f"extract.engine: {spec!r} is not callable")
    return obj


def engine_code_files(spec: str) -> list[str]:
    """What workers need to import the custom engine ``spec`` (``module.path:function``) when
    the driver imports it from outside the installed packages (its folder on PYTHONPATH, the
    config's folder): the module's ``.py`` file, or its top-level package zipped (a zip on
    ``sys.path`` imports like a folder). Empty for an engine from an installed package (workers
    are expected to run the driver's environment)."""
    top = spec.partition(":")[0].split(".")[0]
    if top in importlib.metadata.packages_distributions():  # installed, editable ones too
        return []
    found = importlib.util.find_spec(top)
    if found is None or not found.origin or found.origin in ("built-in", "frozen"):
        return []
    origin = Path(found.origin).resolve()
    installed = {
        Path(p).resolve()
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    } | {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    if any(origin.is_relative_to(p) for p in installed):
        return []
    if origin.name != "__init__.py":
        return [str(origin)] if origin.suffix == ".py" else []
    package = origin.parent
    out = Path(tempfile.mkdtemp(prefix="refine-engine-")) / f"{top}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.rglob("*.py")):
            zf.write(path, path.relative_to(package.parent).as_posix())
    return [str(out)]


def _trafilatura_extract(extract: Callable, options: dict, html: str, url: str | None):
    return extract(html, url=url, **options)


def _resiliparse_extract(extract: Callable, options: dict, html: str | bytes, url: str | None):
    if isinstance(html, bytes):
        # Parse the UTF-8 the parent sent without first building a Python str (~10% faster).
        from resiliparse.parse.html import HTMLTree

        html = HTMLTree.parse_from_bytes(html, "utf-8", errors="surrogatepass")
    return extract(html, **options)


def _load_engine(
    config: ExtractConfig, speedups: bool = True
) -> Callable[[str, str | None], str | None]:
    """Import the engine and bind its options: returns f(html, url) -> str | None.

    Raises ConfigError when the engine cannot be imported. ``speedups=False`` skips installing
    trafilatura's speedups (``check_engine`` in the driver: they never fail, only the extraction
    child runs trafilatura, and installing them costs ~0.3 CPU-s).
    """
    if config.engine == "trafilatura":
        try:
            from trafilatura import extract
        except Exception as e:
            raise ConfigError(
                f"extract.engine: cannot import trafilatura: {type(e).__name__}: {e} "
                "(trafilatura 2.x with lxml>=5.2 also needs lxml_html_clean)"
            ) from e
        if config.speedups and speedups:
            from refine.extract.trafilatura_speedups import install

            install(force=config.speedups == "force")
        options = config.trafilatura_options()
        return _prefiltered(config, functools.partial(_trafilatura_extract, extract, options))
    if config.engine == "resiliparse":
        try:
            from resiliparse.extract.html2text import extract_plain_text
        except Exception as e:
            raise ConfigError(
                f"extract.engine: cannot import resiliparse: {type(e).__name__}: {e}"
            ) from e
        options = dict(
            main_content=config.main_content,
            preserve_formatting=config.preserve_formatting,
            list_bullets=config.list_bullets,
            alt_texts=config.alt_texts,
            links=config.links,
            form_fields=config.form_fields,
            noscript=config.noscript,
            comments=config.comments,
            skip_elements=list(config.skip_elements) if config.skip_elements else None,
        )
        return functools.partial(_resiliparse_extract, extract_plain_text, options)
    return _prefiltered(config, _resolve_custom(config.engine))


def _prefiltered(config: ExtractConfig, engine: Callable) -> Callable:
    """``engine`` behind the language pre-filter when ``prefilter_languages`` is set.

    The quick text is resiliparse's plain text of the whole page, boilerplate included (~1/7 of
    trafilatura's time per page with fastText). Not its main-content mode: that heuristic is
    quadratic in nesting depth (4.5 s for 20,000 nested divs, a timeout at 100,000) where the
    plain text is linear; on the 698 sample pages each mode loses one page. fastText
    sees the text on one line, as the language stage does. The model loads on first use, in the
    extraction child."""
    if not config.prefilter_languages:
        return engine
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    wanted = {f"__label__{lang}" for lang in config.prefilter_languages}
    model = None

    def run(html: str, url: str | None):
        nonlocal model
        quick = extract_plain_text(HTMLTree.parse(html), main_content=False)
        if len(quick) >= max(1, config.prefilter_min_chars):
            if model is None:
                model = fasttext_model(config.prefilter_model)
            labels, probs = model.predict(quick.replace("\n", " "), k=-1, threshold=0.0)
            score = float(sum(p for lab, p in zip(labels, probs, strict=True) if lab in wanted))
            if score < config.prefilter_max_score:
                top = labels[0].removeprefix("__label__") if len(labels) else "?"
                top_score = float(probs[0]) if len(probs) else 0.0
                raise EngineDrop(
                    "language_prefilter", f"quick text: {top} {top_score:.3f}, wanted {score:.4f}"
                )
        return engine(html, url)

    return run


def _engine_facts(config: ExtractConfig) -> dict:
    """What the loaded engine runs with, for the extract stage's report: trafilatura's speedups
    (status, changes applied, trafilatura and lxml versions); empty for other engines."""
    if config.engine != "trafilatura":
        return {}
    from refine.extract import trafilatura_speedups as ts

    if not config.speedups:
        return ts.SpeedupReport(status="off", versions=ts.imported_versions()).summary()
    return ts.install(force=config.speedups == "force").summary()  # the install already done


def check_engine(config: ExtractConfig) -> None:
    """Fail at pipeline build time, not hours into a run: raise ConfigError if the engine cannot
    be imported in this environment (limits are validated by the model itself). Warns, once per
    build, when trafilatura's speedups are asked for but will be skipped (untested versions)."""
    if config.prefilter_languages:
        if config.engine == "resiliparse":
            raise ConfigError(
                "extract.prefilter_languages: the pre-filter's quick text is resiliparse's; with "
                "engine resiliparse it saves nothing (use the language stage)"
            )
        check_fasttext_model(config.prefilter_model)
    _load_engine(config, speedups=False)
    if config.engine == "trafilatura" and config.speedups:
        from refine.extract.trafilatura_speedups import TESTED_VERSIONS, planned_status

        if planned_status(config.speedups) == "skipped_untested_version":
            tested = ", ".join(f"{n} {'/'.join(v)}" for n, v in TESTED_VERSIONS.items())
            logging.getLogger(__name__).warning(
                "extract.speedups: trafilatura's speedups are tested with %s only; this run "
                "extracts with trafilatura as shipped (~2x the CPU; `speedups: force` installs "
                "them anyway)",
                tested,
            )


# --------------------------------------------------------------------------- child side


class _SoftTimeout(BaseException):
    """Raised by the child's alarm; a BaseException so engines' ``except Exception`` let it by."""


def _on_alarm(signum, frame):
    raise _SoftTimeout


def _read_exact(stream, n: int) -> bytes | None:
    data = stream.read(n)
    if len(data) < n:
        return None
    return data


def _child_main() -> None:
    """Entry point of ``python -m refine.extract.engines``: serve documents until stdin closes."""
    # fd 1 is the result channel; anything else printed (by us, engines, C code) goes to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    inp = sys.stdin.buffer

    def send(obj) -> None:
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(payload)) + payload)

    def recv():
        header = _read_exact(inp, _HEADER.size)
        if header is None:
            return None
        payload = _read_exact(inp, _HEADER.unpack(header)[0])
        return None if payload is None else pickle.loads(payload)

    hello = recv()
    if hello is None:
        return
    config_dict, parent_path = hello
    sys.path[:] = list(parent_path) + [p for p in sys.path if p not in parent_path]
    try:
        # Let the kernel's OOM killer pick this child before the Dask worker.
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000\n")
    except OSError:
        pass
    config = ExtractConfig(**config_dict)
    try:
        engine = _load_engine(config)
        facts = _engine_facts(config)
    except Exception as e:
        send(("error", str(e)))
        return
    if config.memory_limit_mb is not None:
        import resource

        limit = config.memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    soft = config.timeout * _SOFT_TIMEOUT_FRACTION
    accepts_bytes = config.engine == "resiliparse"
    signal.signal(signal.SIGALRM, _on_alarm)
    current_group: object = None
    send(("ready", facts))

    while True:
        request = recv()
        if request is None:
            return  # parent closed stdin
        html, url, group = request
        if group != current_group:
            current_group = group
            if config.engine == "trafilatura":
                from trafilatura.deduplication import LRU_TEST

                LRU_TEST.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        if not accepts_bytes:
            html = html.decode("utf-8", "surrogatepass")
        exit_after = False
        text = detail = reason = None
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, soft)
                text = engine(html, url)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if text is not None and not isinstance(text, str):
                raise TypeError(f"engine returned {type(text).__name__}, expected str or None")
            if not text or text.isspace():
                text, reason = None, "no_text"
        except EngineDrop as e:
            text, reason, detail = None, e.reason, e.detail
        except _SoftTimeout:
            text, reason, detail = None, "extract_timeout", f"soft limit {soft:.3g}s in child"
        except MemoryError:
            # The heap may be in a bad state: report, then let the parent replace us.
            text, reason, detail = None, "extract_crashed", "MemoryError"
            exit_after = True
        except Exception as e:
            text, reason, detail = None, "extract_error", f"{type(e).__name__}: {e}"
        send((text, reason, detail, time.perf_counter() - start, time.process_time() - cpu_start))
        if exit_after:
            return


# --------------------------------------------------------------------------- parent side


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Dask's nanny sets this for its workers so they return memory to the OS eagerly; the
    # child is allocation-heavy (lxml trees), is capped by RLIMIT_AS and is replaced when it
    # fails, so it runs with glibc's default.
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    # Make sure `-m refine.extract.engines` resolves to this very package.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    return env


def _frame(obj) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _shutdown(proc: subprocess.Popen, grace: float) -> None:
    """Close the child's stdin (it exits on EOF), wait ``grace`` seconds, then SIGKILL."""
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _kill(proc)


def _describe_exit(proc: subprocess.Popen) -> str:
    try:
        code = proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        _kill(proc)
        code = proc.returncode
    if code is not None and code < 0:
        try:
            return f"child killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"child killed by signal {-code}"
    return f"child exited with code {code}"


class _Child:
    """One running child process and its pipe buffers."""

    def __init__(self, config: ExtractConfig):
        hello = _frame((config.model_dump(), [p or os.getcwd() for p in sys.path]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "refine.extract.engines"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
        )
        self._finalizer = weakref.finalize(self, _shutdown, self.proc, 2.0)
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        for fd in (self.wfd, self.rfd):
            try:  # fewer wake-ups per document than the default 64 KiB (Linux only)
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            except (AttributeError, OSError):
                pass
        os.set_blocking(self.wfd, False)
        self.rbuf = bytearray()
        self.write_broken = False
        self.facts: dict = {}
        """What the child's engine runs with (``_engine_facts``), once it is ready."""
        self._wait_ready(hello, config.startup_timeout)

    def _wait_ready(self, hello: bytes, startup_timeout: float) -> None:
        deadline = time.monotonic() + startup_timeout
        pending = memoryview(hello)
        while True:
            if pending and not self.write_broken:
                pending = pending[self.write(pending) :]
            answer = self.read_frame(deadline, want_write=bool(pending))
            if answer is _EOF:
                detail = _describe_exit(self.proc)
                self.close()
                raise RuntimeError(f"extraction child failed to start: {detail}")
            if answer is None:
                if time.monotonic() >= deadline:
                    self.close(kill=True)
                    raise RuntimeError(f"extraction child did not start within {startup_timeout}s")
                continue
            status, message = answer
            if status == "ready":
                self.facts = dict(message or {})
                return
            self.close()
            raise ConfigError(message)

    def write(self, data: memoryview) -> int:
        """Write what the pipe takes now; returns bytes written."""
        try:
            return os.write(self.wfd, data)
        except BlockingIOError:
            return 0
        except (BrokenPipeError, OSError):
            self.write_broken = True  # the reader will see EOF
            return 0

    def poll(self, deadline: float | None, want_write: bool) -> tuple[bool, bool]:
        """Wait until readable/writable or deadline; returns (readable, writable)."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        wlist = [self.wfd] if want_write and not self.write_broken else []
        try:
            r, w, _ = select.select([self.rfd], wlist, [], timeout)
        except InterruptedError:
            return False, False
        return bool(r), bool(w)

    def read_frame(self, deadline: float | None, want_write: bool = False):
        """One decoded frame, None if nothing complete yet (deadline hit or writable), or _EOF."""
        frame = self._take_frame()
        if frame is not None:
            return frame
        readable, _ = self.poll(deadline, want_write)
        if not readable:
            return None
        chunk = os.read(self.rfd, _READ_CHUNK)
        if not chunk:
            return _EOF
        self.rbuf += chunk
        return self._take_frame()

    def _take_frame(self):
        if len(self.rbuf) < _HEADER.size:
            return None
        (n,) = _HEADER.unpack_from(self.rbuf)
        end = _HEADER.size + n
        if len(self.rbuf) < end:
            return None
        obj = pickle.loads(memoryview(self.rbuf)[_HEADER.size : end])
        del self.rbuf[:end]
        return obj

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, kill: bool = False) -> None:
        if kill:
            _kill(self.proc)
        self._finalizer()


class _EOFType:
    pass


_EOF = _EOFType()


class Extractor:
    """Extracts main text from HTML in a child process, with a hard per-document time limit.

    Not thread-safe: use one per thread (``get_extractor`` does that). The child starts on the
    first document, not in ``__init__``, and is replaced after a timeout or crash.
    """

    def __init__(self, config: ExtractConfig):
        self.config = config
        self._child: _Child | None = None
        self._started = False
        self._calls = 0
        self.restarts = 0
        """Children started after the first one (timeouts and crashes)."""
        self.engine_facts: dict = {}
        """What the latest child's engine runs with (``_engine_facts``: trafilatura's speedups
        and versions); empty until a child has started."""

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child: close its stdin so it exits, SIGKILL it if it does not."""
        if self._child is not None:
            self._child.close()
            self._child = None

    def extract(self, html: str, url: str | None = None) -> ExtractResult:
        return self.extract_many([(html, url)])[0]

    def extract_many(self, docs: Iterable[tuple[str, str | None]]) -> list[ExtractResult]:
        """Extract ``(html, url)`` documents, returning results in the same order.

        Each call is one deduplication scope for trafilatura: its cross-document cache starts
        empty, so the text of a partition's documents does not depend on what ran before it.

        ``docs`` is consumed lazily, a few documents ahead of the one being extracted, so a
        generator that reads WARC records overlaps with extraction, and a fast engine does not
        wait for a round trip per document. Each document still gets its own ``timeout``, counted
        from when the child could start it (it had finished the previous one and had the page).
        """
        source = iter(docs)
        self._calls += 1
        group = self._calls
        results: list[ExtractResult] = []
        retry: deque[tuple[int, str, str | None]] = deque()  # in flight when a child was lost
        try:
            while self._run(source, retry, results, group):
                pass
        except BaseException:
            # e.g. ``docs`` raised mid-way: answers still in the pipe would be misattributed.
            if self._child is not None:
                self._child.close(kill=True)
                self._child = None
            raise
        return results

    def _ensure_child(self) -> _Child:
        child = self._child
        if child is not None and not child.alive():
            # Died while idle (e.g. OOM-killed): not any document's fault.
            child.close(kill=True)
            child = self._child = None
        if child is None:
            if self._started:
                self.restarts += 1
            self._started = True
            child = self._child = _Child(self.config)
            self.engine_facts = child.facts
        return child

    def _run(self, source, retry: deque, results: list, group: object) -> bool:
        """Feed documents to one child until ``source`` is exhausted (returns False) or the child
        is lost (returns True, with the unanswered documents moved to ``retry``)."""
        child: _Child | None = None
        timeout = self.config.timeout
        inflight: deque[tuple[int, str, str | None]] = deque()  # sent, oldest first
        written_at: dict[int, float] = {}  # index -> when its frame was fully written
        ends: deque[tuple[int, int]] = deque()  # (end offset in `out`, index) not yet written
        inflight_bytes = 0
        out = memoryview(b"")
        out_pos = 0
        exhausted = False
        head_start = 0.0  # when the child finished the previous document

        def lose_child(reason: str, detail: str) -> None:
            index = inflight.popleft()[0]
            seconds = time.monotonic() - max(head_start, written_at.get(index, head_start))
            results[index] = ExtractResult(None, reason, detail, seconds)
            child.close(kill=True)
            self._child = None
            retry.extendleft(reversed(inflight))

        while True:
            # Take more documents while the window has room and the last batch is written.
            if out_pos >= len(out) and not exhausted:
                chunks = []
                size = 0
                while len(inflight) < _PIPELINE_DEPTH and (
                    inflight_bytes < _PIPELINE_MAX_BYTES or not inflight
                ):
                    if retry:
                        doc = retry.popleft()
                    else:
                        try:
                            html, url = next(source)
                        except StopIteration:
                            exhausted = True
                            break
                        doc = (len(results), html, url)
                        results.append(None)
                    frame = _frame((doc[1].encode("utf-8", "surrogatepass"), doc[2], group))
                    chunks.append(frame)
                    size += len(frame)
                    ends.append((size, doc[0]))
                    inflight.append(doc)
                    inflight_bytes += len(doc[1])
                if chunks:
                    if child is None:
                        child = self._ensure_child()
                        head_start = time.monotonic()
                    out, out_pos = memoryview(b"".join(chunks)), 0
            if not inflight:
                return False
            if out_pos < len(out) and not child.write_broken:
                out_pos += child.write(out[out_pos:])
                now = time.monotonic()
                while ends and ends[0][0] <= out_pos:
                    written_at[ends.popleft()[1]] = now
            index = inflight[0][0]
            if index in written_at:
                deadline = max(head_start, written_at[index]) + timeout
            elif child.write_broken:
                deadline = head_start + timeout  # the child is dying; wait for its EOF
            else:
                deadline = None  # wait until the pipe takes more of this document
            frame = child.read_frame(deadline, want_write=out_pos < len(out))
            if frame is _EOF:
                lose_child("extract_crashed", _describe_exit(child.proc))
                return True
            if frame is None:
                if deadline is not None and time.monotonic() >= deadline:
                    lose_child("extract_timeout", f"no answer within {timeout:g}s; child killed")
                    return True
                continue
            text, reason, detail, seconds, cpu_seconds = frame
            inflight_bytes -= len(inflight.popleft()[1])
            written_at.pop(index, None)
            results[index] = ExtractResult(text, reason, detail, seconds, cpu_seconds)
            head_start = time.monotonic()
            if reason == "extract_crashed":  # the child reported MemoryError and exits
                child.close(kill=True)
                self._child = None
                retry.extendleft(reversed(inflight))
                return True


_local = threading.local()


def get_extractor(config: ExtractConfig) -> Extractor:
    """The Extractor for ``config`` in this thread, created on first use: a Dask worker thread
    loads the engine once and reuses its child for every partition task it runs."""
    cache = getattr(_local, "extractors", None)
    if cache is None:
        cache = _local.extractors = {}
    extractor = cache.get(config)
    if extractor is None:
        extractor = cache[config] = Extractor(config)
    return extractor


if __name__ == "__main__":
    # Run the child loop from the importable module, not from this __main__ copy.
    from refine.extract.engines import _child_main as _main

    _main()
