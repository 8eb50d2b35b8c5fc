"""Pipeline configuration: a YAML file validated into typed objects before any work starts.

```yaml
input: ["${REFINE_TEST_DATA:-../shared/data}/warc/*.warc.gz"]
output: out/sample
keep_intermediate: false
cluster: {address: null, workers: 2}
stages:
  - read: {slice_mb: 16}
  - extract: {engine: trafilatura, timeout: 10}
```

Every problem is reported as one ``ConfigError`` line naming the YAML path
(``stages[1].extract.timeout: ...``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from refine.errors import ConfigError
from refine.pipeline.registry import STAGES, stage_class
from refine.pipeline.stage import Stage


class ClusterConfig(BaseModel):
    """Where the Dask work runs. No address: a LocalCluster of worker processes."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None  # e.g. tcp://10.0.0.5:8786, an existing `dask scheduler`
    workers: int | None = Field(default=None, ge=1)  # LocalCluster processes; default: CPU count
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str = "auto"  # per LocalCluster worker, Dask syntax ("4GiB", "auto")
    retries: int = Field(default=2, ge=0)  # per part, e.g. a dropped HTTPS read of a WARC
    # serve Dask's dashboard (bokeh) from a LocalCluster; off by default: importing it costs
    # the driver ~1.5 CPU-s at start and refine prints its own progress and report
    dashboard: bool = False
    # A batch system or Kubernetes starts the workers (dask-jobqueue / dask-kubernetes); the
    # driver runs the scheduler. Each job runs `cores` single-threaded workers (one per core).
    kind: Literal["local", "slurm", "pbs", "sge", "lsf", "kubernetes"] = "local"
    jobs: int = Field(default=1, ge=1)  # batch jobs (or Kubernetes worker pods)
    cores: int | None = Field(default=None, ge=1)  # per job
    memory: str | None = None  # per job, e.g. "64GiB"
    walltime: str | None = None  # e.g. "24:00:00"
    queue: str | None = None  # Slurm partition / PBS, SGE, LSF queue
    account: str | None = None  # project to charge
    job_extra: list[str] = Field(default_factory=list)  # extra #SBATCH / #PBS directives
    job_script_prologue: list[str] = Field(default_factory=list)  # e.g. "source venv/bin/activate"
    image: str | None = None  # Kubernetes: the container image with refine installed
    interface: str | None = None  # batch: network interface workers reach the scheduler on
    # Dask worker resources each started worker declares, e.g. {GPU: 1} on GPU jobs / a local
    # machine with a GPU; stages that need one (model_classifier device: cuda) run only there
    resources: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way(self) -> ClusterConfig:
        if self.kind != "local" and self.address:
            raise ValueError(f"cluster.address and cluster.kind: {self.kind} exclude each other")
        if self.kind in ("slurm", "pbs", "sge", "lsf") and (not self.cores or not self.memory):
            raise ValueError(f"cluster.kind: {self.kind} needs cores and memory (per job)")
        if self.kind == "kubernetes" and not self.image:
            raise ValueError("cluster.kind: kubernetes needs image (with refine installed)")
        return self


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: list[str] = Field(default_factory=list)
    output: str
    keep_intermediate: bool = False
    #: OUT/dataset/: the final documents as shards people load without refine
    output_format: Literal["parquet", "jsonl.gz"] = "parquet"
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    stages: list[dict[str, Any] | str]
    #: the strings ``${VAR}`` expansion changed, as written: ``{"at": ["input", 0], "written":
    #: "${DATA}/x.warc.gz"}``; report.json keeps them (``config_env``) so a published copy of
    #: the config can show what was written instead of the environment's values
    _as_written: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def as_written(self) -> list[dict[str, Any]]:
        return self._as_written

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


#: Only the braced form, for stage parameters: a bare ``$`` there (a regex, a price) stays.
_ENV_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, pattern: re.Pattern = _ENV) -> str:
    """``${VAR}``, ``$VAR`` and ``${VAR:-default}`` from the environment."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"environment variable {name} is not set (used in {value!r})")

    return pattern.sub(sub, value)


def expand_env_params(value: Any) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in every string of a stage entry (nested mappings and
    lists too), e.g. model paths under ``${REFINE_MODELS:-.cache/refine/models}``."""
    if isinstance(value, str):
        return expand_env(value, _ENV_BRACED)
    if isinstance(value, dict):
        return {k: expand_env_params(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env_params(v) for v in value]
    return value


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pydantic_message(err: ValidationError, prefix: str = "") -> str:
    msgs = []
    for e in err.errors():
        where = _loc(tuple(e["loc"]))
        where = f"{prefix}.{where}" if prefix and where else (prefix or where)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msgs.append(f"{where}: {msg}")
    return "; ".join(msgs)


def build_stages(entries: list[Any]) -> list[Stage]:
    """Turn the ``stages:`` list into validated stage objects (no work, no model loading)."""
    if not entries:
        raise ConfigError("stages: the pipeline has no stages")
    stages: list[Stage] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"stages[{i}]"
        if isinstance(entry, str):
            entry = {entry: None}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{where}: expected one mapping '- name: {{params}}', got {entry!r}")
        ((name, params),) = entry.items()
        if name not in STAGES:
            known = ", ".join(STAGES)
            raise ConfigError(f"{where}: unknown stage {name!r} (known stages: {known})")
        if name in seen:
            raise ConfigError(f"{where}: stage {name!r} appears twice")
        seen.add(name)
        cls = stage_class(name)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.{name}: expected a mapping of parameters, got {params!r}")
        try:
            p = cls.Params(**params)
        except ValidationError as e:
            raise ConfigError(_pydantic_message(e, f"{where}.{name}")) from None
        stage = cls(p)
        stage.absolute_paths()  # workers may run in another folder: relative to the driver's
        stages.append(stage)
    if stages[0].kind != "source":
        raise ConfigError(
            f"stages[0]: the first stage must read input (e.g. 'read'), not {stages[0].name!r}"
        )
    for i, s in enumerate(stages[1:], start=1):
        if s.kind == "source":
            raise ConfigError(
                f"stages[{i}]: {s.name!r} reads input and can only be the first stage"
            )
    declared = getattr(stages[0], "declared_output", None)
    check_source_chain(stages, declared() if declared else None)
    return stages


def check_source_chain(stages: list[Stage], produces: str | None) -> None:
    """What follows the source must fit what it gives: ``extract`` turns HTML pages into text,
    so it belongs after WARC input and never after text input (JSONL, Parquet, hf://)."""
    if produces == "documents":
        for i, s in enumerate(stages[1:], start=1):
            if s.name == "extract":
                raise ConfigError(
                    f"stages[{i}]: 'extract' turns HTML pages into text, but the input is text "
                    f"already (JSONL / Parquet): remove 'extract' from the stages"
                )
    elif produces == "pages" and len(stages) > 1 and stages[1].name != "extract":
        raise ConfigError(
            f"stages[1]: {stages[1].name!r} needs text, but WARC input gives HTML pages: "
            f"put 'extract' right after 'read'"
        )


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a YAML config; ``overrides`` (from the CLI) replace top-level keys."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("address", "workers"):
            raw.setdefault("cluster", {})
            if not isinstance(raw["cluster"], dict):
                raise ConfigError(f"{path}: cluster: expected a mapping")
            raw["cluster"][key] = value
        else:
            raw[key] = value
    try:
        cfg = PipelineConfig(**raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_pydantic_message(e)}") from None
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None
    fields = {"input", "output", "stages"}
    written = cfg.model_dump(mode="json", include=fields)
    try:
        cfg.input = [expand_env(s) for s in cfg.input]
        cfg.output = expand_env(cfg.output)
        cfg.stages = [expand_env_params(entry) for entry in cfg.stages]
        build_stages(cfg.stages)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg._as_written = _changed_strings(written, cfg.model_dump(mode="json", include=fields))
    if not cfg.input:
        raise ConfigError(f"{path}: input: no input given (set 'input:' or pass --input)")
    return cfg


def _changed_strings(before: Any, after: Any, at: tuple = ()) -> list[dict[str, Any]]:
    """Where two dumps of the same config (before and after expansion) differ: each string's
    location and its text before."""
    if isinstance(before, dict):
        return [e for k, v in before.items() for e in _changed_strings(v, after[k], (*at, k))]
    if isinstance(before, list):
        return [e for i, v in enumerate(before) for e in _changed_strings(v, after[i], (*at, i))]
    return [{"at": list(at), "written": before}] if before != after else []
