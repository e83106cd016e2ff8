#!/usr/bin/env python3
"""Writes a small random Glow as a .glow file (tests/harness.py's
export_random_model, as the Python tests make theirs): the model of the C
tests that need a real one (test_concurrency, long_run).

usage: make_model.py OUT.glow [--size 16] [--channels 3] [--n-flow 4]
                     [--n-block 2] [--hidden 32] [--seed 1]
"""
import argparse

from harness import export_random_model

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--size", type=int, default=16)
ap.add_argument("--channels", type=int, default=3)
ap.add_argument("--n-flow", type=int, default=4)
ap.add_argument("--n-block", type=int, default=2)
ap.add_argument("--hidden", type=int, default=32)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
export_random_model(a.out, a.channels, a.n_flow, a.n_block, a.hidden, a.size, a.seed)
