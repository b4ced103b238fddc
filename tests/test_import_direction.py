"""Imports point one way: model-level math <- loader <- quantization / pipelines <- cli.

Every module of the package is parsed (not imported), and every import in it counts, those
inside functions too: a lazy import is still a dependency. The diffusion math (`components`,
`conditioning`, `guidance`) sits at the model level."""

import ast
from pathlib import Path

import LTX_2_MLX

PACKAGE = Path(LTX_2_MLX.__file__).parent
MODEL_LEVEL = {"model", "components", "conditioning", "guidance"}
# What each layer may import from the package.
ALLOWED = {
    **{name: MODEL_LEVEL for name in MODEL_LEVEL},
    "loader": MODEL_LEVEL | {"loader"},
    "quantization": MODEL_LEVEL | {"loader", "quantization"},
    "pipelines": MODEL_LEVEL | {"loader", "quantization", "pipelines"},
    "cli": MODEL_LEVEL | {"loader", "quantization", "pipelines", "cli"},
}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_subpackages(path: Path, source: str) -> list[tuple[int, str, str]]:
    """(line, imported name, LTX_2_MLX subpackage it lies in) for every import of the package
    in `source`, the text of the module at `path`."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module[:-1]
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:
                base = package[: len(package) - node.level + 1] + base
            # `from LTX_2_MLX import loader` names the subpackage in the imported names.
            names = [".".join(base + [alias.name]) if len(base) == 1 else ".".join(base) for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "LTX_2_MLX" and len(parts) > 1:
                found.append((node.lineno, name, parts[1]))
    return found


def test_the_import_parser_sees_lazy_relative_and_package_imports():
    source = (
        "import LTX_2_MLX.cli\n"
        "from LTX_2_MLX import pipelines\n"
        "from ..quantization.quantize import quantize_transformer\n"
        "from . import checkpoint\n"
        "def f():\n"
        "    from LTX_2_MLX.model.transformer import LTXModel\n"
    )
    found = imported_subpackages(PACKAGE / "loader" / "example.py", source)
    assert [target for _, _, target in found] == ["cli", "pipelines", "quantization", "loader", "model"]


def test_imports_point_down_the_layers():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        layer = module[1] if len(module) > 1 else None
        if layer not in ALLOWED:
            continue
        for line, name, target in imported_subpackages(path, path.read_text()):
            if target in ALLOWED and target not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} ({layer} -> {target})")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)
