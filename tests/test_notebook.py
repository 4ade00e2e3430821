"""examples/quickstart.ipynb, run top to bottom in a real Jupyter kernel (nbclient + ipykernel)
on tiny settings, so the notebook users open cannot rot: every cell runs without an error,
the figures come out inline as images, and the kernel's inline backend is still the one in
use at the end (the tool switched nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extras: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extras: pip install -e '.[test]'")


def outputs_text(cell) -> str:
    return "".join(out.get("text", "") + str((out.get("data") or {}).get("text/plain", "")) for out in cell.outputs)


def test_the_quickstart_notebook_runs_in_a_real_kernel(tmp_path, synthetic_folder):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, "the notebook has one cell tagged 'parameters'"
    photo = sorted((synthetic_folder / "test" / "green").iterdir())[0]
    parameters[0].source = (
        f"DATASET = {str(synthetic_folder)!r}\nPRESET = 'smoke'\nEPOCHS = 2\nDATA_DIR = {str(tmp_path / 'cache')!r}\n"
        f"OUT = {str(tmp_path / 'run')!r}\nPHOTO = {str(photo)!r}\n"
    )
    notebook.cells.append(nbformat.v4.new_code_cell("import matplotlib; print('backend:', matplotlib.get_backend())"))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    errors = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors, errors[0]
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]

    def cell_with(text: str):
        return next(cell for cell in code if text in cell.source)

    def has_image(cell) -> bool:
        return any("image/png" in (out.get("data") or {}) for out in cell.outputs)

    for call in ("cifar100.class_distribution(data)", "run.plot_history()", "run.confusion_matrix()",
                 "run.show_predictions(16)", "run.gradcam(8)"):
        assert has_image(cell_with(call)), f"{call} showed no figure"
    assert "4 classes" in outputs_text(cell_with("load_dataset"))
    assert "Run(" in outputs_text(cell_with("cifar100.train(")) and (tmp_path / "run" / "report.html").is_file()
    assert "val_accuracy" in outputs_text(cell_with("history = run.history"))
    assert "test top-1" in outputs_text(cell_with('run.metrics["test"]'))
    assert f"{photo} ->" in outputs_text(cell_with("run.predict(image)"))
    assert (tmp_path / "run" / "export" / "model.onnx").is_file()
    assert "inline" in outputs_text(notebook.cells[-1])
