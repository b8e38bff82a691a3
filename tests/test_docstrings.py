"""Every public function and class of llm_trainer/ (and every public method of a public class) says in a
docstring what it is for. Read with ``ast``: nothing is imported, so the check is fast and needs no heavy library."""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "llm_trainer"
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def public_definitions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of each public module-level function and class, and each public method (or nested
    class) of a public class; a name starting with "_" is private, which leaves out validators and dunders."""
    for node in tree.body:
        if not isinstance(node, DEFINITIONS) or node.name.startswith("_"):
            continue
        yield node.name, node
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, DEFINITIONS) and not member.name.startswith("_"):
                    yield f"{node.name}.{member.name}", member


def missing_docstrings(root: Path = LIBRARY) -> list[str]:
    """'path:line name' of each public definition under ``root`` without a docstring."""
    missing = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, node in public_definitions(tree):
            if not (ast.get_docstring(node) or "").strip():
                missing.append(f"{path.relative_to(root.parent)}:{node.lineno} {name}")
    return missing


def test_every_public_definition_has_a_docstring():
    missing = missing_docstrings()
    assert not missing, f"{len(missing)} public definitions without a docstring:\n" + "\n".join(missing)


def test_the_check_finds_a_missing_docstring(tmp_path):
    (tmp_path / "module.py").write_text(textwrap.dedent('''
        def documented():
            """Does a thing."""

        def bare():
            pass

        def _private():
            pass

        class Thing:
            """A thing."""

            def method(self):
                pass

            def _hidden(self):
                pass
        '''))
    assert missing_docstrings(tmp_path) == [f"{tmp_path.name}/module.py:5 bare",
                                            f"{tmp_path.name}/module.py:14 Thing.method"]
