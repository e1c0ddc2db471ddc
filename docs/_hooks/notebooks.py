"""mkdocs hook: pages from files kept at the repository root, outside ``docs_dir``.

- ``notebooks/*.ipynb`` (the test suite executes them there) become pages under
  ``notebooks/``. They are added before mkdocs-jupyter's ``on_files`` runs (higher priority),
  so mkdocs-jupyter renders them like notebooks inside ``docs/``.
- ``CHANGELOG.md`` becomes the page ``changelog.md``.

Nothing is copied or linked on disk.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHANGELOG = ROOT / "CHANGELOG.md"


@event_priority(100)
def on_files(files, config):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        uri = f"notebooks/{path.name}"
        if files.get_file_from_path(uri) is None:
            # a plain File rooted at the repository (mkdocs-jupyter reads ``src_dir``)
            files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    if CHANGELOG.exists() and files.get_file_from_path("changelog.md") is None:
        files.append(File.generated(config, "changelog.md",
                                    content=CHANGELOG.read_text(encoding="utf-8")))
    return files


def on_serve(server, config, builder):
    server.watch(str(NOTEBOOKS))
    server.watch(str(CHANGELOG))
    return server
