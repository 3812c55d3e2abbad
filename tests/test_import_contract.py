"""The import contract's run-time half: the CLI and the benchmarks import torch lazily.

import-linter ([tool.importlinter] in pyproject.toml, run by `make test`) checks the static half
(runtime never imports torch or s3rt.export; export uses only public backend modules), but it
counts imports inside functions too, so "lazily" is checked here: every s3rt.cli.* and
s3rt.benchmarks.* module imports in a fresh interpreter where `import torch` fails.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import s3rt.benchmarks
import s3rt.cli


def _modules(package) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + "."))


def test_cli_and_benchmark_modules_import_without_torch():
    names = _modules(s3rt.cli) + _modules(s3rt.benchmarks)
    assert "s3rt.cli.main" in names and "s3rt.benchmarks.bench" in names and len(names) >= 20
    code = ("import importlib, sys\n"
            "sys.modules['torch'] = None                  # any `import torch` raises ImportError\n"
            "try:\n    import torch\n    sys.exit('torch still importable: the check would be vacuous')\n"
            "except ImportError:\n    pass\n"
            f"failed = []\nfor name in {names!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as exc:\n        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
            "print('\\n'.join(failed))\nassert sys.modules['torch'] is None\nsys.exit(1 if failed else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"modules that need torch at import time:\n{proc.stdout}{proc.stderr}"

