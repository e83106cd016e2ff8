#!/usr/bin/env python3
"""Regenerates the fuzz seed corpora in fuzz/corpus/<target>/ from files the
project itself makes: tiny random models exported by models/export.py (as
tests/cli_test.py does), PNG/JPEG images written by `glowrt sample`, and .npy
inputs/latents (`glowrt encode`). Seeds stay a few KB each.

usage: /usr/bin/python3 fuzz/make_seeds.py --glowrt build/glowrt
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
import glow  # noqa: E402

CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(" ".join(args) + ": " + r.stderr)


def make_model(tmp, out, in_channel, n_flow, n_block, hidden, size, affine=True, seed=1):
    torch.manual_seed(seed)
    m = glow.random_model(in_channel, n_flow, n_block, affine=affine, conv_lu=True, hidden=hidden,
                          height=size, width=size, seed=seed)
    ckpt = os.path.join(tmp, "m.pt")
    torch.save(m.state_dict(), ckpt)
    run([sys.executable, os.path.join(ROOT, "models", "export.py"), "rosinality", ckpt, "-o", out,
         "--image-size", str(size), "--n-bits", "8", "--alignment", "64", "-q"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--glowrt", required=True)
    a = ap.parse_args()
    for d in ("model", "npy", "png", "jpeg", "latent"):
        os.makedirs(os.path.join(CORPUS, d), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(CORPUS, "model")
        make_model(tmp, os.path.join(mdir, "rgb-2x2-l1-w4.glow"), 3, 1, 1, 4, 2)
        make_model(tmp, os.path.join(mdir, "gray-4x4-l2-w4-additive.glow"), 1, 1, 2, 4, 4, affine=False, seed=2)
        make_model(tmp, os.path.join(mdir, "gray-2x2-l1-w2.glow"), 1, 1, 1, 2, 2, seed=3)
        # The decode target's fixed model: 1 channel, 4x4, D = 16.
        model = os.path.join(mdir, "gray-4x4-l2-w4-additive.glow")
        rgb = os.path.join(mdir, "rgb-2x2-l1-w4.glow")
        run([a.glowrt, "sample", rgb, "-n", "1", "-o", os.path.join(CORPUS, "png", "rgb-2x2.png"), "--seed", "1"])
        run([a.glowrt, "sample", model, "-n", "1", "-o", os.path.join(CORPUS, "png", "gray-4x4.png"), "--seed", "2"])
        run([a.glowrt, "sample", rgb, "-n", "1", "-o", os.path.join(CORPUS, "jpeg", "rgb-2x2.jpg"), "--seed", "3"])
        run([a.glowrt, "sample", model, "-n", "1", "-o", os.path.join(CORPUS, "jpeg", "gray-4x4.jpg"), "--seed", "4"])
        run([a.glowrt, "sample", rgb, "-n", "2", "-o", os.path.join(CORPUS, "npy", "f32-2x3x2x2.npy"), "--seed", "5"])
        rng = np.random.default_rng(0)
        np.save(os.path.join(CORPUS, "npy", "u8-1x4x4x3.npy"), rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8))
        np.save(os.path.join(CORPUS, "npy", "u8-2x4x4.npy"), rng.integers(0, 256, (2, 4, 4), dtype=np.uint8))
        run([a.glowrt, "encode", model, os.path.join(CORPUS, "png", "gray-4x4.png"), "-o",
             os.path.join(CORPUS, "latent", "enc-1x16.npy")])
        np.save(os.path.join(CORPUS, "latent", "prior-3x16.npy"), rng.standard_normal((3, 16)).astype(np.float32))
        # float64 arrays (numpy's default dtype) are read too
        np.save(os.path.join(CORPUS, "npy", "f64-1x3x2x2.npy"), rng.random((1, 3, 2, 2)) - 0.5)
        np.save(os.path.join(CORPUS, "latent", "f64-2x16.npy"), rng.standard_normal((2, 16)))
    for d, _, files in os.walk(CORPUS):
        for f in sorted(files):
            print(os.path.relpath(os.path.join(d, f), ROOT), os.path.getsize(os.path.join(d, f)))


if __name__ == "__main__":
    main()
