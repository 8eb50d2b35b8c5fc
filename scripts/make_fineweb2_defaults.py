"""Write refine's shipped per-language filter defaults from FineWeb-2's published configs.

FineWeb-2 (huggingface/fineweb-2, Apache-2.0) publishes one YAML file of filter settings per
language (``configs/{lang}_{Script}.yml``). This script copies the values of every file in
``--configs`` (default ``$REFINE_TEST_DATA/fineweb2/configs``) unchanged into
``refine/filters/assets/fineweb2/languages.json`` with the source and licence named, and the
Apache-2.0 licence text beside it. ``tests/test_multilingual_filters.py`` checks that the asset
equals the configs.

    .venv/bin/python scripts/make_fineweb2_defaults.py [--configs DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "refine" / "filters" / "assets" / "fineweb2" / "languages.json"
SOURCE = (
    "FineWeb-2 (https://github.com/huggingface/fineweb-2), configs/{lang}_{Script}.yml: "
    "per-language settings of its datatrove filters"
)
LICENCE = "Apache-2.0 (LICENSE beside this file)"


def read_configs(folder: Path) -> dict[str, dict]:
    """language label (``deu_Latn``) -> its settings, as the YAML files have them."""
    out = {}
    for path in sorted(folder.glob("*.yml")):
        with path.open(encoding="utf-8") as f:
            out[path.stem] = yaml.safe_load(f)
    if not out:
        raise SystemExit(f"no *.yml files in {folder}")
    return out


def asset(configs: dict[str, dict]) -> dict:
    return {"source": SOURCE, "licence": LICENCE, "languages": configs}


def main() -> None:
    data = Path(os.environ.get("REFINE_TEST_DATA", ROOT.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=Path, default=data / "fineweb2" / "configs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    configs = read_configs(args.configs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asset(configs), ensure_ascii=False, indent=1, sort_keys=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    licence = args.configs.parent / "LICENSE-fineweb-2-apache-2.0"
    if licence.is_file():
        shutil.copyfile(licence, args.output.parent / "LICENSE")
    print(f"{args.output}: {len(configs)} languages")


if __name__ == "__main__":
    main()
