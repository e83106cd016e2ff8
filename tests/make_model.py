#!/usr/bin/env python3
"""Writes a small random Glow as a .glow file (models/glow.py random_model,
exported by models/export.py, as tests/cli_test.py does): the model of the
C tests that need a real one (test_concurrency, long_run).

usage: make_model.py OUT.glow [--size 16] [--channels 3] [--n-flow 4]
                     [--n-block 2] [--hidden 32] [--seed 1]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
import glow  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--size", type=int, default=16)
ap.add_argument("--channels", type=int, default=3)
ap.add_argument("--n-flow", type=int, default=4)
ap.add_argument("--n-block", type=int, default=2)
ap.add_argument("--hidden", type=int, default=32)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
torch.manual_seed(a.seed)
m = glow.random_model(a.channels, a.n_flow, a.n_block, affine=True, conv_lu=True, hidden=a.hidden,
                      height=a.size, width=a.size, seed=a.seed)
with tempfile.TemporaryDirectory() as tmp:
    ckpt = os.path.join(tmp, "m.pt")
    torch.save(m.state_dict(), ckpt)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "models", "export.py"), "rosinality", ckpt, "-o", a.out,
                        "--image-size", str(a.size), "--n-bits", "8", "-q"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("export failed: " + r.stderr)
