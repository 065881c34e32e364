"""The package's architecture: no import circle anywhere, dependencies pointing one way, and the
shipping code (pretrained) independent of training code."""
import ast
from pathlib import Path

import minidiff
import minidiff as md

PACKAGE = Path(minidiff.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the minidiff modules it imports at module level or inside functions}."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module and target in modules:
                    deps.add(target)
                deps |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minidiff"):
                deps |= {node.module} & set(modules)
        graph[name] = deps - {name}
    return graph


def cycle_from(graph: dict[str, set[str]], start: str) -> list[str]:
    stack = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for dep in graph[node]:
            if dep == start:
                return path + [start]
            if dep not in path:
                stack.append((dep, path + [dep]))
    return []


def test_no_import_circle():
    graph = import_graph()
    # a package's __init__ re-exports its children; a circle through it is not a real one
    libraries = {name: {d for d in deps if d != "minidiff"} for name, deps in graph.items() if name != "minidiff"}
    circles = [c for c in (cycle_from(libraries, name) for name in libraries) if c]
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_shipping_code_does_not_import_training_or_measuring():
    graph = import_graph()
    assert not graph["minidiff.pretrained"] & {"minidiff.train", "minidiff.metrics", "minidiff.pretrained.recipes"}
    assert "minidiff.train" not in graph["minidiff.registry"]


def test_library_does_not_import_course_tooling():
    graph = import_graph()
    for name, deps in graph.items():
        if name != "minidiff" and not name.startswith("minidiff.course"):
            assert not {d for d in deps if d.startswith("minidiff.course")}, name


def test_metrics_only_measure():
    source = (PACKAGE / "metrics.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == [], f"metrics.py defines {classes}; networks live in minidiff.nn"
    assert "optimizer" not in source.lower() and "backward(" not in source


def test_no_docstring_has_control_characters():
    """LaTeX in a non-raw docstring turns \\b, \\f, \\t… into control characters: every module is checked."""
    import importlib
    import inspect
    import pkgutil
    names = [m.name for m in pkgutil.walk_packages(md.__path__, "minidiff.") if m.name != "minidiff.__main__"]
    for module in [md] + [importlib.import_module(n) for n in names]:
        members = [("module", module)] + inspect.getmembers(module)
        members += [(f"{n}.{a}", v) for n, c in inspect.getmembers(module, inspect.isclass) for a, v in vars(c).items()]
        for name, obj in members:
            doc = getattr(obj, "__doc__", None) if not isinstance(obj, str) else None
            doc = doc if isinstance(doc, str) else ""
            assert not any(ord(c) < 32 and c not in "\n\t" for c in doc), f"{module.__name__}.{name}"
