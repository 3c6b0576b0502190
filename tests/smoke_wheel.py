"""A smoke test of the installed wheel: every module of the package imports and every
public name resolves, from the installed copy, not a checkout. `.ci/run` runs it
(`python tests/smoke_wheel.py`) in a fresh environment where the wheel alone is
installed; pytest does not collect it (its name does not start with `test_`)."""

import importlib
import pathlib
import pkgutil
import sys

import hamux_lagr as hl


def main() -> None:
    here = pathlib.Path(__file__).resolve().parent.parent
    installed = pathlib.Path(hl.__file__).resolve().parent
    assert here not in installed.parents, f"imported from the checkout: {installed}"
    modules = [hl.__name__] + [
        m.name for m in pkgutil.walk_packages(hl.__path__, hl.__name__ + ".")
    ]
    for name in modules:
        if not name.endswith("__main__"):
            importlib.import_module(name)
    public = 0
    for module in (hl, hl.functional, importlib.import_module("hamux_lagr.demo")):
        for name in dir(module):
            if not name.startswith("_"):
                getattr(module, name)
                public += 1
    print(
        f"hamux_lagr {hl.__version__} from {installed}: {len(modules)} modules, "
        f"{public} public names"
    )


if __name__ == "__main__":
    sys.exit(main())
