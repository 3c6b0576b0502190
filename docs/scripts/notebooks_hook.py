"""MkDocs hook: publish the notebooks of `examples/` under `examples/` on the site.

The notebooks stay in one place (`examples/`, where the test suite runs them); this
hook adds them to the files MkDocs builds, before `mkdocs-jupyter` turns them into
pages. They are stored with their outputs (`docs/scripts/run_notebooks.py` refreshes
them; the test suite checks they are those of a fresh run), so the site shows their
plots and numbers without running them.
"""

import pathlib

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files


_ROOT = pathlib.Path(__file__).resolve().parents[2]


@event_priority(100)  # before mkdocs-jupyter's own `on_files`
def on_files(files: Files, config) -> Files:
    for notebook in sorted((_ROOT / "examples").glob("*.ipynb")):
        files.append(
            File(
                f"examples/{notebook.name}",
                src_dir=str(_ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
