"""What the Python end-to-end tests share: PASS/FAIL bookkeeping, running a
program, and writing a small random rosinality-layout Glow as a .glow file
(models/glow.py random_model, exported by models/export.py)."""
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
import glow  # noqa: E402

PY = sys.executable
results = []


def check(name, ok, detail=""):
    """Record one check; print PASS/FAIL with the detail of a failure."""
    results.append(bool(ok))
    print(("PASS " if ok else "FAIL ") + name + ("" if ok or not detail else ": " + str(detail)[:600]), flush=True)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def export_random_model(out, in_channel=3, n_flow=2, n_block=2, hidden=16, size=8, seed=1):
    """A random affine, LU Glow exported to OUT (.glow); returns OUT."""
    torch.manual_seed(seed)
    m = glow.random_model(in_channel, n_flow, n_block, affine=True, conv_lu=True, hidden=hidden,
                          height=size, width=size, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "m.pt")
        torch.save(m.state_dict(), ckpt)
        r = run([PY, os.path.join(ROOT, "models", "export.py"), "rosinality", ckpt, "-o", out,
                 "--image-size", str(size), "--n-bits", "8", "-q"])
    if r.returncode != 0:
        raise SystemExit("export failed: " + r.stderr)
    return out


def finish():
    """Print 'N passed, N failed' and exit 1 if any check failed."""
    n_fail = results.count(False)
    print("%d passed, %d failed" % (len(results) - n_fail, n_fail))
    sys.exit(1 if n_fail else 0)
