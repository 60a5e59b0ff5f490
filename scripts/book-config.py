"""Print the book's _config.yml with notebook execution switched on (`make book EXECUTE=1`).

Jupyter Book 1 takes a whole config file with --config, so this writes a copy of _config.yml in which
only `execute.execute_notebooks` differs.
"""
import argparse
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--execute", action="store_true", help="execute every chapter (execute_notebooks: force)")
args = parser.parse_args()
config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
config["execute"]["execute_notebooks"] = "force" if args.execute else "off"
yaml.safe_dump(config, sys.stdout, allow_unicode=True, sort_keys=False)
