"""Nothing in the library hard-codes a device (DESIGN.md: device follows the input tensor).

An ``ast`` scan of ``src/hybrida`` for literal device names ("cpu", "cuda", "cuda:K", "mps")
given as a device: ``device="cpu"`` keywords, ``torch.device("cuda")``, ``x.to("cpu")``,
``x.cuda()``, and ``device="..."`` parameter defaults. Modules that only convert for I/O or
plotting (writing NetCDF, printing, drawing) are allowed; so is ``torch.load(...,
map_location="cpu")``, which reads a file onto the host (its callers move what they use).
``.cpu()`` is not flagged: it is how tensors leave for numpy at the writers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hybrida"

DEVICE_NAME = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")

#: modules allowed to name a device: they convert results for files, screens and plots only
ALLOWED = ("io/", "plots.py", "_plots.py", "cli")


def _literal_device(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(DEVICE_NAME.match(node.value))


def hard_coded_devices(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for every literal device given as a device in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            for k in node.keywords:
                if k.arg == "device" and _literal_device(k.value):
                    found.append((node.lineno, f"device={k.value.value!r}"))
            if name in ("device", "to") and node.args and _literal_device(node.args[0]):
                found.append((node.lineno, f"{name}({node.args[0].value!r})"))
            if name == "cuda" and isinstance(f, ast.Attribute) and not node.args:
                found.append((node.lineno, ".cuda()"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            pos = [*args.posonlyargs, *args.args]
            pairs = list(zip(pos[len(pos) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for a, d in pairs:
                if a.arg == "device" and _literal_device(d):
                    found.append((node.lineno, f"def {node.name}(device={d.value!r})"))
    return sorted(found)


def _allowed(rel: str) -> bool:
    return rel.startswith(ALLOWED[0]) or any(rel.endswith(s) or rel.startswith(s) for s in ALLOWED[1:])


def test_no_hard_coded_device_in_compute_paths():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if _allowed(rel):
            continue
        bad += [f"{rel}:{line}: {what}" for line, what in hard_coded_devices(path.read_text())]
    assert not bad, "hard-coded devices (follow the input tensor instead):\n" + "\n".join(bad)


def test_the_scan_finds_each_form():
    """The scan is not vacuous: each hard-coded form is caught, and the legitimate ones are not."""
    caught = hard_coded_devices(
        "import torch\n"
        "a = torch.zeros(3, device='cuda')\n"
        "b = torch.device('cpu')\n"
        "c = a.to('cuda:1')\n"
        "d = a.cuda()\n"
        "def f(x, device='mps'):\n    return x\n"
        "def g(x, *, device='cpu'):\n    return x\n"
    )
    assert sorted(line for line, _ in caught) == [2, 3, 4, 5, 6, 8]
    assert hard_coded_devices(
        "import torch\n"
        "a = torch.zeros(3, device=x.device)\n"
        "b = torch.load(p, map_location='cpu')\n"
        "c = a.to(x)\n"
        "d = a.cpu().numpy()\n"
        "e = a.to('float64') if False else a\n"
        "def f(x, device=None):\n    return x\n"
    ) == []


def test_allow_list_covers_only_io_and_plots():
    assert _allowed("io/results.py") and _allowed("plots.py") and _allowed("experiment/enso_plots.py")
    assert _allowed("cli_sweep.py")
    assert not _allowed("cycle.py") and not _allowed("experiment/builder.py")
    assert not _allowed("assimilation/ensemble/letkf.py")
