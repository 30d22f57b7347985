"""The notebooks run headlessly, top to bottom, on the smoke study's outputs, from notebooks/
(where Jupyter runs them)."""

import os

import nbformat
import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, smoke_study, monkeypatch):
  from nbclient import NotebookClient

  workdir, _ = smoke_study
  # Jupyter runs a notebook in its own directory: the workdir is given relative to notebooks/,
  # as the notebooks' default (../results/study_demo) is, so every path must resolve from there.
  monkeypatch.setenv("SIMCLR_DISTILL_WORKDIR", os.path.relpath(workdir, path.parent))
  monkeypatch.setenv("PYTHONPATH", str(REPO))
  book = nbformat.read(path, as_version=4)
  NotebookClient(book, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": str(path.parent)}}).execute()
  errors = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if o.get("output_type") == "error"]
  assert errors == []
  assert any(o.get("output_type") in ("display_data", "execute_result") for cell in book.cells
             if cell.cell_type == "code" for o in cell.get("outputs", []))


def test_there_are_notebooks():
  assert {p.name for p in NOTEBOOKS} >= {"explore_results.ipynb", "load_student.ipynb"}
