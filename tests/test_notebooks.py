"""The notebooks: committed with small outputs, and each runs top to bottom in a fresh kernel.

Executing all of them takes about 6 minutes on 2 CPU cores, so the execution tests are marked
slow (``pytest -m slow tests/test_notebooks.py``); the checks of the committed files are not.
"""

from __future__ import annotations

import base64
import pathlib

import nbformat
import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
SHARED = NOTEBOOKS.parents[1] / "shared" / "benchmarks"
NEEDS_BENCHMARKS = {"04_acasxu", "08_sciml_control"}
MAX_PNG_BYTES = 60_000


def _code_outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield cell, cell.get("outputs", [])


def test_there_are_notebooks():
    assert {"01_quickstart", "02_semantics", "05_proofs"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_and_small(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    errors, pngs, executed = [], [], 0
    for cell, outputs in _code_outputs(nb):
        executed += cell.get("execution_count") is not None
        for out in outputs:
            if out.output_type == "error":
                errors.append(f"{out.ename}: {out.evalue}")
            png = out.get("data", {}).get("image/png")
            if png:
                pngs.append(len(base64.b64decode(png)))
    assert not errors, errors
    assert executed == sum(1 for _ in _code_outputs(nb)), (
        "commit the notebook executed top to bottom"
    )
    assert all(n <= MAX_PNG_BYTES for n in pngs), f"PNG outputs too large (dpi 60 expected): {pngs}"
    last = [o for o in list(_code_outputs(nb))[-1][1] if o.output_type == "stream"]
    assert last and "notebook ran in" in last[-1].text


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_a_fresh_kernel(name):
    from nbclient import NotebookClient

    if name in NEEDS_BENCHMARKS and not SHARED.is_dir():
        pytest.skip(f"{name} needs the benchmark data at {SHARED}")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell, _ in _code_outputs(nb):
        cell.outputs = []
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any failure
    streams = "".join(
        o.get("text", "")
        for _, outs in _code_outputs(nb)
        for o in outs
        if o.output_type == "stream"
    )
    assert "notebook ran in" in streams
