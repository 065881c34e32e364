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


# The library's modules in the order an arrow may run: a module imports only modules before it. It follows
# the course (chapters 01–08) with two layers pulled forward: ``conditioning`` (what a network is given and
# returns, and the checks on it) sits first, and the networks (``nn``, the registry that builds them) come
# before the code that trains and samples them. ``metrics`` measures in the shipped classifier's features,
# so it comes after ``pretrained``. ``course/`` may import anything; ``__main__`` (the CLI) and the package
# roots that only re-export (``minidiff``, ``minidiff.nn``) are outside the order.
ORDER = [
    "progress",                                                     # the loops' progress bars: imports no minidiff
    "conditioning", "schedules", "diffusion", "flow",               # 01–03: the forward process; 09: its straight path
    "data", "checkpoint", "images",                                 # data in [-1, 1], files (atomic writes)
    "losses", "scores",                                             # 03, 05: the objective; 06's score view
    "nn.embedding", "nn.blocks", "nn.unet", "nn.classifier",        # 04
    "nn.autoencoder", "nn.text", "registry",                        # 08's networks; the registry builds any kind
    "objectives", "train",                                          # 05
    "samplers", "guidance",                                         # 06, 07
    "latent", "editing",                                            # 08, 10
    "pretrained", "metrics", "pretrained.recipes",                  # shipped models; measures; recipes
]


def library_graph() -> dict[str, set[str]]:
    """The import graph among ORDER's modules, names without the "minidiff." prefix."""
    graph = import_graph()
    short = lambda name: name.removeprefix("minidiff.")
    return {short(name): {short(d) for d in deps} & set(ORDER) for name, deps in graph.items() if short(name) in ORDER}


def test_the_order_names_every_library_module():
    graph = import_graph()
    library = {name.removeprefix("minidiff.") for name in graph
               if not name.startswith("minidiff.course")
               and name not in ("minidiff", "minidiff.nn", "minidiff.__main__")}
    assert library == set(ORDER), f"modules outside ORDER: {library - set(ORDER)}; gone: {set(ORDER) - library}"


def test_no_arrow_runs_back_up_the_course_order():
    rank = {name: i for i, name in enumerate(ORDER)}
    back = [f"{name} -> {dep}" for name, deps in library_graph().items() for dep in deps if rank[dep] > rank[name]]
    assert not back, "imports of a later module: " + "; ".join(sorted(back))


def test_the_networks_and_objectives_of_early_chapters_import_no_later_chapter():
    """The arrows issue 36 found: the U-Net (04) read the text encoder (08) and guidance (07), the losses (05)
    guidance, objectives (05) the autoencoder (08), metrics and latent the shipped models."""
    graph = library_graph()
    assert not graph["nn.unet"] & {"nn.text", "guidance", "nn.autoencoder"}
    assert not graph["losses"] & {"guidance", "samplers"} and "nn.autoencoder" not in graph["objectives"]
    assert "pretrained" not in graph["latent"] and "samplers" not in graph["train"]
    assert "diffusion" not in graph["registry"]                   # unwrap lives in conditioning


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


def test_the_step_functions_are_short_enough_to_read_beside_their_equation():
    """Issue 36: ddpm_step, ddim_step and dpm_solver_step are the equations, at most 15 lines of body each
    (the docstring not counted); their checks live in one helper, the loops' in samplers.prepare."""
    import inspect
    import textwrap
    for fn in (md.ddpm_step, md.ddim_step, md.dpm_solver_step):
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        body = tree.body[1:] if isinstance(tree.body[0], ast.Expr) else tree.body     # without the docstring
        lines = body[-1].end_lineno - body[0].lineno + 1
        assert lines <= 15, f"{fn.__name__} has {lines} lines of body"
