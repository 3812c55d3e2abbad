"""Check the import contract ([tool.importlinter] in pyproject.toml) with import-linter.

import-linter (grimp) finds a package's modules by walking the folder of its root package, but
s3rt maps its subpackages to top-level folders (s3rt.runtime -> runtime/, ...; pyproject's
[tool.setuptools] package-dir), so `s3rt/` alone holds only the CLI. This script copies the
Python files into a temporary tree laid out as installed (s3rt/runtime/..., s3rt/export/...) and
runs `lint-imports` on it with the project's own configuration. Exit status: lint-imports'.

    python .ci/lint_imports.py          (make test runs it before pytest)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:          # Python 3.10: import-linter depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def stage(into: Path) -> None:
    """Copy every mapped package folder's .py files to where the installed package has them."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        target = into.joinpath(*package.split("."))
        shutil.copytree(ROOT / folder, target, dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if n == "__pycache__" or
                                                 (Path(d, n).is_file() and not n.endswith(".py"))])


def main() -> int:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        print(f"lint-imports not found beside {sys.executable}: pip install import-linter (the 'dev' extra)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="s3rt_imports_") as tmp:
        stage(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.run([str(lint), "--no-cache", str(ROOT / "pyproject.toml")], cwd=tmp, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
