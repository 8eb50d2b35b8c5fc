import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import REPO, require_shared_data  # noqa: E402

SAMPLE_MODELS = (
    "sample-en.binary",
    "sample-en.sp.model",
    "sample-quality.bin",
    "sample-eval.jsonl",  # the decontaminate stage's stand-in evaluation set
    "sample-domain",  # model_classifier's stand-in (refine train-classifier --base tiny)
)


@pytest.fixture(scope="session")
def sample_models(tmp_path_factory) -> Path:
    """The models configs/sample.yaml names under REFINE_MODELS, trained once per session by
    scripts/train_sample_models.sh (the step `make run` and README.md use). Skips without
    KenLM's lmplz (scripts/build_kenlm.sh)."""
    from refine.errors import ConfigError
    from refine.training import find_kenlm_tool

    data = require_shared_data()
    try:
        find_kenlm_tool("lmplz")
        find_kenlm_tool("build_binary")
    except ConfigError as e:
        pytest.skip(str(e))
    models = tmp_path_factory.mktemp("sample-models")
    env = {
        **os.environ,
        "REFINE_TEST_DATA": str(data),
        "REFINE_MODELS": str(models),
        "PYTHON": sys.executable,
    }
    cmd = ["bash", "scripts/train_sample_models.sh"]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert sorted(p.name for p in models.iterdir()) == sorted(SAMPLE_MODELS)  # no temporaries
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already in" in again.stdout  # cached, not retrained
    return models
