"""The package's layers point one way, and the lower ones stay light to import.

From the bottom up (a module imports only from its own layer or lower ones):

1. base: ``errors``, ``fileio``, ``config`` (the typed config), ``methods`` (the
   method table) and ``parallel`` (device helpers);
2. ``data/``: corpora, vocabulary, batches, the synthetic generator;
3. ``models/``: the Flax modules;
4. ``evaluation/``: estimators and passes over a trained model;
5. ``training/``: the loop, steps, checkpoints, writers;
6. ``analysis/``: grid posteriors, training dynamics, curves and figures;
7. ``tasks/``: what is trained (text VAEs, dialog CVAEs, classifiers, lagging);
8. commands: the top-level modules (``api``, ``cli``, ``main``, ``sweep``, ...).

Imports inside functions count too: a lazy import is still a dependency.
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bnvae_jax"
BASE = ("errors", "fileio", "config", "methods", "parallel")
LAYERS = (
    "base",
    "data",
    "models",
    "evaluation",
    "training",
    "analysis",
    "tasks",
    "commands",
)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module: str) -> str:
    """The layer of a dotted ``bnvae_jax`` module name."""
    parts = module.split(".")[1:]
    if not parts:
        return "commands"  # the package itself: its public names come from api
    if parts[0] in BASE:
        return "base"
    if parts[0] in LAYERS:
        return parts[0]
    return "commands"


def imported_modules(path: pathlib.Path) -> set[str]:
    """The ``bnvae_jax`` modules ``path`` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bnvae_jax"))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import")
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("bnvae_jax"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if _is_module(name) else node.module)
    return found


def test_layer_of_a_few_modules():
    assert layer("bnvae_jax.config") == "base"
    assert layer("bnvae_jax.parallel") == "base"
    assert layer("bnvae_jax.data.datasets") == "data"
    assert layer("bnvae_jax.tasks.dialog.train") == "tasks"
    assert layer("bnvae_jax.analysis.grid") == "analysis"
    assert layer("bnvae_jax.sweep") == "commands"
    assert layer("bnvae_jax.api") == "commands"
    assert layer("bnvae_jax") == "commands"


def test_the_scan_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import bnvae_jax.models.vae\n"
        "from bnvae_jax import config as c, parallel\n"
        "from bnvae_jax.training.loop import setup\n"
        "def f():\n"
        "    from bnvae_jax import api\n"
    )
    assert imported_modules(source) == {
        "bnvae_jax.models.vae",
        "bnvae_jax.config",
        "bnvae_jax.parallel",
        "bnvae_jax.training.loop",
        "bnvae_jax.api",
    }


def test_every_import_points_down_or_sideways():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50
    wrong = []
    for path in modules:
        source = _module_name(path)
        rank = LAYERS.index(layer(source))
        for target in sorted(imported_modules(path)):
            if LAYERS.index(layer(target)) > rank:
                wrong.append(f"{source} ({layer(source)}) imports {target}")
    assert not wrong, "\n".join(wrong)


HEAVY = ("orbax", "tensorboardX", "tqdm")
LIGHT = {
    # module: what importing it must not load
    "bnvae_jax.config": (*HEAVY, "jax", "numpy"),
    "bnvae_jax.parallel": HEAVY,
    "bnvae_jax.data.datasets": (*HEAVY, "jax"),
    "bnvae_jax.models.vae": HEAVY,
    "bnvae_jax.models.svi": HEAVY,
    "bnvae_jax.evaluation.run": ("orbax", "tensorboardX"),
    "bnvae_jax.evaluation.decoding": ("orbax", "tensorboardX"),
    # Commands: --help and usage errors answer before JAX loads.
    **{
        f"bnvae_jax.{command}": ("jax", "orbax", "tensorboardX", "matplotlib")
        for command in (
            "main",
            "lagging",
            "dynamics",
            "evaluate",
            "export",
            "sweep",
            "classify",
        )
    },
}


@pytest.mark.parametrize("module", sorted(LIGHT))
def test_lower_layers_do_not_load_the_heavy_libraries(module):
    code = (
        f"import sys, json, {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert module.split(".")[0] in loaded  # the probe itself works
    assert not loaded & set(LIGHT[module]), sorted(loaded & set(LIGHT[module]))
