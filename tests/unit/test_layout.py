"""The house rules of pipeline/'s layout (docs/design.md): no module imports a module that imports it
back (imports inside functions count too), the science imports neither Django nor Celery, and the
tests mirror the package's folders."""
import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "pipeline"


def module_name(path, root):
    name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph(package_dir):
    """{module: set of modules of the package it imports}, from every import statement of each file."""
    files = {module_name(p, package_dir): p for p in package_dir.rglob("*.py") if "migrations" not in p.parts}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                candidates = [source] + [f"{source}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in files:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def circles(graph):
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("from . import a\n")
    (package / "d.py").write_text("from pkg import a\n")
    assert circles(import_graph(package)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_module_of_pipeline_imports_a_module_that_imports_it_back():
    graph = import_graph(PACKAGE)
    assert "pipeline.workflow.canvas" in graph and "pipeline.workflow.step_tasks" in graph["pipeline.workflow.canvas"]
    assert circles(graph) == []


def test_the_science_and_the_survey_adapters_import_neither_django_nor_celery():
    for folder in ("steps", "surveys"):
        for path in (PACKAGE / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.split(".")[0] in ("django", "celery") for n in names), path


def test_tests_mirror_the_package_folders():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    for tier in ("unit", "integration"):
        folders = {p.name for p in (REPO_ROOT / "tests" / tier).iterdir() if p.is_dir() and p.name != "__pycache__"}
        assert folders <= packages, f"tests/{tier} has folders that are not packages of pipeline/: {folders - packages}"
