"""The house rules: the floors and the import names, checked by import-linter's contracts in pyproject.toml, and
ruff's lint rules ([tool.ruff] there)."""
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import embodied

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _floors() -> list[set[str]]:
    floors = next(c for c in CONTRACTS if c["type"] == "layers" and c["name"].startswith("Floors"))["layers"]
    return [{m.strip() for m in layer.split(":")} for layer in floors]


def test_import_contracts_hold():
    """Floors, no cycles inside a package, no bare `envs`/`planners`/... imports: a broken contract fails here."""
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; "
                           "raise SystemExit(lint_imports(no_cache=True))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout


def test_the_code_passes_ruff():
    """Unused names, undefined names, lines over 120 characters: `ruff check` names the file and line."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                           "embodied", "envs", "planners", "policies", "benchmarks", "tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_every_module_sits_on_a_floor():
    """A new top-level module or folder must be placed on a floor, or the layering rule would not see it."""
    placed = set().union(*_floors())
    names = {f"embodied.{m.name}" for m in pkgutil.iter_modules(embodied.__path__)}
    envs = {f"embodied.envs.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "envs")])}
    unplaced = sorted(n for n in (names | envs) - {"embodied.envs"} if n not in placed)
    assert not unplaced, f"add these modules to a floor in pyproject.toml [tool.importlinter]: {unplaced}"


def test_folders_are_importable_only_by_unambiguous_names():
    """`embodied.envs` is the repository's envs/ folder; a bare `import envs` finds nothing outside the checkout."""
    code = ("import importlib.util, embodied.envs, embodied.planners, embodied.policies, embodied.benchmarks;"
            "print([importlib.util.find_spec(n) is None for n in ('envs', 'planners', 'policies', 'benchmarks')])")
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[True, True, True, True]", proc.stderr[-2000:]
