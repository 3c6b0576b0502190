"""The API reference as the documentation site builds it: mkdocstrings reads the
docstrings statically, with griffe, so a docstring assembled at run time (say
`__doc__ = a + b`) renders as an empty page. Every public name must have prose there."""

import importlib.util
import inspect
import pathlib
import re
import types

import equinox as eqx
import griffe
import pytest
from helpers import run_without_hook

import hamux_lagr
import hamux_lagr.functional


ROOT = pathlib.Path(__file__).resolve().parents[1]
# Methods the API pages show besides the public ones (mkdocs.yml's `filters`);
# `__init__` is merged into the class's own docstring.
SHOWN_DUNDERS = ("__call__",)


@pytest.fixture(scope="module")
def package():
    return griffe.load(
        "hamux_lagr",
        search_paths=[str(ROOT)],
        resolve_aliases=True,
        resolve_external=False,
    )


def exported(module) -> dict[str, object]:
    """The public names a griffe module re-exports from `hamux_lagr` (`from ._x import
    y as y`), resolved to the objects they name."""
    names = {}
    for name, member in module.members.items():
        if name.startswith("_"):
            continue
        if member.is_alias:
            if not member.target_path.startswith("hamux_lagr."):
                continue  # e.g. `import importlib.metadata`
            member = member.final_target
        if member.is_module and name != "functional":
            continue  # `demo` is documented on its own page
        names[name] = member
    return names


def has_prose(obj) -> bool:
    return obj.docstring is not None and bool(obj.docstring.value.strip())


def public_methods(cls) -> dict[str, object]:
    methods = {}
    for name, member in cls.all_members.items():  # inherited ones included
        if name.startswith("_") and name not in SHOWN_DUNDERS:
            continue
        if member.is_alias:
            if not member.target_path.startswith("hamux_lagr."):
                continue  # inherited from Equinox
            member = member.final_target
        if member.is_function:
            methods[name] = member
    return methods


def test_every_exported_name_is_found_statically(package):
    # The names griffe sees are the names users import (its modules aside).
    def runtime(module):
        names = {
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and not isinstance(obj, types.ModuleType)
            and getattr(obj, "__module__", "").startswith("hamux_lagr")
        }
        return names | ({"functional"} if module is hamux_lagr else set())

    assert set(exported(package)) == runtime(hamux_lagr)
    assert set(exported(package["functional"])) == runtime(hamux_lagr.functional)
    # `hamux_lagr.functional` holds every `lagr_*` function, and only those.
    lagr = {name for name in runtime(hamux_lagr) if name.startswith("lagr_")}
    assert set(exported(package["functional"])) == lagr


def test_every_public_name_has_a_docstring(package):
    names = {f"hamux_lagr.{n}": obj for n, obj in exported(package).items()}
    names |= {
        f"hamux_lagr.functional.{n}": obj
        for n, obj in exported(package["functional"]).items()
    }
    missing = sorted(name for name, obj in names.items() if not has_prose(obj))
    assert not missing, f"no docstring as griffe reads it: {missing}"


def test_every_public_method_has_a_docstring(package):
    missing = [
        f"{name}.{method}"
        for name, obj in exported(package).items()
        if obj.is_class
        for method, function in public_methods(obj).items()
        if not has_prose(function)
    ]
    assert not missing, f"methods with no docstring as griffe reads it: {missing}"


def test_api_pages_show_typed_signatures():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for option in (
        "show_signature_annotations: true",
        "separate_signature: true",
        "signature_crossrefs: true",
    ):
        assert re.search(rf"^\s+{option}\s*(#.*)?$", text, re.M), option


def test_every_public_class_shows_its_constructor_signature():
    # Field-declared modules (the Lagrangian families) get their `__init__` from the
    # dataclass machinery at run time; the docs' griffe extension writes it into the
    # static model, so that every class's page shows what it takes.
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "docs/scripts/griffe_module_init.py:ModuleInit" in text
    extension = griffe.load_extensions(
        f"{ROOT / 'docs/scripts/griffe_module_init.py'}:ModuleInit"
    )
    package = griffe.load(
        "hamux_lagr",
        search_paths=[str(ROOT)],
        resolve_aliases=True,
        resolve_external=False,
        extensions=extension,
    )
    for name, obj in exported(package).items():
        cls = getattr(obj, "final_target", obj)
        runtime_cls = getattr(hamux_lagr, name)
        if not isinstance(cls, griffe.Class) or inspect.isabstract(runtime_cls):
            continue
        if issubclass(runtime_cls, eqx.Enumeration):  # a set of codes, never built
            continue
        init = cls.all_members.get("__init__")
        init = getattr(init, "final_target", init)
        assert init is not None, f"{name} has no constructor signature in the docs"
        runtime = inspect.signature(runtime_cls)
        # (Names, not order: fields inherited from a base come first in the docs.)
        documented = sorted(p.name for p in init.parameters)
        assert documented == sorted(["self", *runtime.parameters]), name


def test_every_public_name_is_on_an_api_page(package):
    pages = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "api").glob("*.md")
    )
    documented = set(re.findall(r"^::: hamux_lagr\.(\w+)", pages, re.M))
    assert set(exported(package)) - {"functional"} <= documented


def test_the_library_never_imports_beartype():
    # Only the test suite's jaxtyping hook uses beartype.
    out = run_without_hook(
        "import sys, hamux_lagr, hamux_lagr.demo\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'beartype'))"
    )
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("sklearn", "optax")),
    reason="needs scikit-learn and optax",
)
def test_readme_and_getting_started_code_runs():
    # Every Python block of the README and the getting-started page, in order and in
    # one namespace (later blocks use earlier names), as a user runs them (default
    # float32, no test hooks). The block that switches JAX's random stream is the
    # seed's example, reproduced in test_seed_examples.py.
    blocks = []
    for page in ("README.md", "docs/getting_started.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        blocks += [
            b
            for b in re.findall(r"```python\n(.*?)```", text, re.S)
            if "threefry" not in b
        ]
    assert len(blocks) >= 6
    script = "namespace = {}\n" + "\n".join(
        f"exec({block!r}, namespace)\nprint('block {i} ran')"
        for i, block in enumerate(blocks)
    )
    out = run_without_hook(script).splitlines()
    assert [line for line in out if line.startswith("block")] == [
        f"block {i} ran" for i in range(len(blocks))
    ]
    assert out.count("True") == 1  # "Build a memory": every pattern restored
    assert "(20,)" in out  # its vmapped energies
