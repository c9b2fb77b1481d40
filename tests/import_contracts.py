"""A contract type for import-linter: what importing a module loads, package ``__init__`` files included.

import-linter's own contracts follow the import statements of modules, but a package's
``__init__.py`` runs whenever one of its modules is imported and is not modelled as a dependency
of them: ``import torch`` planted in ``trd/scoring/__init__.py`` keeps a "forbidden" contract on
``trd.runtime`` kept although importing the runtime then loads torch. This contract follows what
Python executes on import instead: the module-level imports (also inside ``if``/``try``/class
bodies, but not inside functions, which run later, nor under ``if TYPE_CHECKING``) of each module
and of every package on the way to it.

Registered in pyproject.toml (``contract_types``); `tests/test_layers.py` puts this folder on the
path of the ``lint-imports`` process (run it by hand as ``PYTHONPATH=src:tests lint-imports``).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from importlinter import Contract, ContractCheck, fields, output


def _package_dir(root: str) -> Path:
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {root!r} not found")
    return Path(next(iter(spec.submodule_search_locations)))


class _Package:
    """The modules of one root package, by dotted name, and what each loads when imported."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.base = _package_dir(root)

    def file(self, module: str) -> Path | None:
        """The source file of ``module`` (``__init__.py`` for a package), None if it is not ours."""
        parts = module.split(".")
        if parts[0] != self.root:
            return None
        folder = self.base.joinpath(*parts[1:])
        if (folder / "__init__.py").is_file():
            return folder / "__init__.py"
        file = folder.with_suffix(".py")
        return file if len(parts) > 1 and file.is_file() else None

    def modules_under(self, package: str) -> list[str]:
        """``package`` and every module below it."""
        first = self.file(package)
        if first is None:
            raise ValueError(f"module {package!r} not found under {self.base}")
        if first.name != "__init__.py":
            return [package]
        found = []
        for path in sorted(first.parent.rglob("*.py")):
            rel = path.relative_to(self.base).with_suffix("")
            parts = [self.root, *rel.parts]
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        return found

    def loads(self, module: str) -> list[str]:
        """Modules that importing ``module`` executes imports of (ours and external, dotted)."""
        file = self.file(module)
        if file is None:
            return []
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        names: list[str] = []
        for node in _import_time_statements(ast.parse(file.read_text(), str(file)).body):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names.append(base)
                # ``from package import name``: name may be a submodule, which is then imported too
                names += [f"{base}.{alias.name}" for alias in node.names if self.file(f"{base}.{alias.name}")]
        return names


def _import_time_statements(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when a module body runs (not those in functions or TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found += _import_time_statements(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    found += _import_time_statements([n for n in inner if isinstance(n, ast.stmt)] +
                                                     [s for h in inner if isinstance(h, ast.ExceptHandler)
                                                      for s in h.body])
    return found


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs every package above it first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_time_chains(root: str, sources: list[str], forbidden: list[str]) -> list[list[str]]:
    """For each forbidden module that importing a module under ``sources`` loads: one chain of
    imports from that module to it (breadth first, so the shortest)."""
    package = _Package(root)
    starts = [m for source in sources for m in package.modules_under(source)]
    came_from: dict[str, str | None] = {}
    queue: list[str] = []
    for start in starts:
        for m in _with_parents(start):
            if m not in came_from:
                came_from[m] = None if m == start or m == root else start
                queue.append(m)
    while queue:
        module = queue.pop(0)
        for name in package.loads(module):
            for m in _with_parents(name):
                if m not in came_from:
                    came_from[m] = module
                    if package.file(m) is not None:
                        queue.append(m)
    chains = []
    for bad in forbidden:
        if bad in came_from:
            chain, at = [bad], came_from[bad]
            while at is not None:
                chain.append(at)
                at = came_from[at]
            chains.append(chain[::-1])
    return chains


class ImportTimeForbiddenContract(Contract):
    """Importing any module under ``source_modules`` loads none of ``forbidden_modules``, counting
    package ``__init__`` files and module-level imports only (imports inside functions are lazy)."""

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: object, verbose: bool) -> ContractCheck:
        root = self.session_options["root_packages"][0]
        chains = import_time_chains(root, list(self.source_modules), list(self.forbidden_modules))
        return ContractCheck(kept=not chains, warnings=None, metadata={"chains": chains})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for chain in check.metadata["chains"]:
            output.print_error(f"importing {chain[0]} loads {chain[-1]}:", bold=True)
            output.indent_cursor()
            output.print_error(" -> ".join(chain))
            output.new_line()
