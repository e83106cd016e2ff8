"""Train a rosinality-layout Glow (models/glow.py) on Fashion-MNIST.

    /usr/bin/python3 models/train.py --n-flow 8 --n-block 2 --hidden 128 \
        --minutes 40 --threads 1 --ckpt-dir models/ckpt

Data: Debian's dataset-fashion-mnist idx files, read with gzip + numpy. The
28x28 images are used as they are (no padding/resizing), so n_block must keep
28 / 2^n_block an integer (n_block <= 2).

Checkpoints (in --ckpt-dir):
  model_STEP.pt   state_dict, rosinality key layout (no 'module.' prefix)
  optim_STEP.pt   {'optimizer', 'step', 'epoch', 'args', 'elapsed_s'}
  progress.json   model config, train-bpd history, latest checkpoint, test bpd
--resume continues from the newest model/optim pair (weights, Adam state, step).
"""
import argparse
import glob
import gzip
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from glow import Glow  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # unsigned byte
        raise ValueError("%s: not a uint8 idx file" % path)
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    return arr.reshape(dims)


def load_split(split, data_dir=DATA_DIR):
    x = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % split))
    y = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % split))
    return x, y


def to_model_space(u, n_bits, noise=None):
    """u: uint8 array/tensor [N, H, W] -> float tensor [N, 1, H, W] in model space.
    noise=None: bin centre; else a tensor of U(0,1) of the same shape."""
    x = torch.as_tensor(u).float().unsqueeze(1)
    n_bins = 2.0 ** n_bits
    if n_bits < 8:
        x = torch.floor(x / 2 ** (8 - n_bits))
    x = x / n_bins - 0.5
    if noise is None:
        return x + 0.5 / n_bins
    return x + noise / n_bins


def bpd_of(ll, n_dim, n_bits):
    """bits/dim of the discrete image from the continuous log-density (nats)."""
    return -(ll - n_dim * math.log(2.0 ** n_bits)) / (n_dim * math.log(2.0))


def latest_ckpt(ckpt_dir):
    best = None
    for p in glob.glob(os.path.join(ckpt_dir, "model_*.pt")):
        m = re.match(r"model_(\d+)\.pt$", os.path.basename(p))
        if m and os.path.exists(os.path.join(ckpt_dir, "optim_%s.pt" % m.group(1))):
            step = int(m.group(1))
            if best is None or step > best[0]:
                best = (step, p)
    return best


def atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def evaluate(model, images, n_bits, batch, device):
    model.eval()
    n_dim = images.shape[1] * images.shape[2]
    total = 0.0
    for i in range(0, len(images), batch):
        x = to_model_space(images[i:i + batch], n_bits).to(device)
        ll = model.log_prob(x).double()
        total += bpd_of(ll, n_dim, n_bits).sum().item()
    model.train()
    return total / len(images)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-flow", type=int, default=8)
    ap.add_argument("--n-block", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--affine", dest="affine", action="store_true", default=True)
    g.add_argument("--additive", dest="affine", action="store_false")
    ap.add_argument("--no-lu", action="store_true", help="plain 1x1 convs (last block stays LU)")
    ap.add_argument("--n-bits", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200, help="linear lr warm-up steps")
    ap.add_argument("--clip", type=float, default=0.0,
                    help="clip the gradient norm to this (0: off); steps with a non-finite "
                         "gradient are always skipped")
    ap.add_argument("--epochs", type=float, default=None, help="stop after this many epochs (total)")
    ap.add_argument("--minutes", type=float, default=None, help="time budget of this invocation")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "ckpt"))
    ap.add_argument("--save-minutes", type=float, default=5.0)
    ap.add_argument("--keep", type=int, default=3, help="checkpoints kept (older ones deleted)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--holdout-class", type=int, default=None, help="train without this class (0..9)")
    ap.add_argument("--test-n", type=int, default=10000, help="t10k images for the final test bpd (0: skip)")
    ap.add_argument("--print-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=DATA_DIR)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if 28 % (2 ** args.n_block) != 0:
        ap.error("28x28 images need 28 % 2^n_block == 0 (n_block <= 2)")
    os.makedirs(args.ckpt_dir, exist_ok=True)
    prog_path = os.path.join(args.ckpt_dir, "progress.json")

    train_x, train_y = load_split("train", args.data_dir)
    if args.holdout_class is not None:
        train_x = train_x[train_y != args.holdout_class]
    n_train = len(train_x)
    n_dim = 28 * 28
    config = dict(in_channel=1, n_flow=args.n_flow, n_block=args.n_block, affine=args.affine,
                  conv_lu=not args.no_lu, hidden=args.hidden, n_bits=args.n_bits, image_size=28,
                  holdout_class=args.holdout_class)

    torch.manual_seed(args.seed)
    model = Glow(1, args.n_flow, args.n_block, affine=args.affine, conv_lu=not args.no_lu,
                 hidden=args.hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, elapsed_prev, history = 0, 0.0, []
    if args.resume:
        found = latest_ckpt(args.ckpt_dir)
        if found is None:
            print("no checkpoint in %s, starting fresh" % args.ckpt_dir, flush=True)
        else:
            step, path = found
            model.load_state_dict(torch.load(path, map_location=device))
            st = torch.load(os.path.join(args.ckpt_dir, "optim_%07d.pt" % step), map_location=device)
            if st["config"] != config:
                sys.exit("resume: checkpoint config %s differs from arguments %s" % (st["config"], config))
            opt.load_state_dict(st["optimizer"])
            elapsed_prev = st.get("elapsed_s", 0.0)
            if os.path.exists(prog_path):
                history = json.load(open(prog_path)).get("history", [])
                history = [h for h in history if h["step"] <= step]
            print("resumed from %s (step %d)" % (path, step), flush=True)

    rng = np.random.default_rng(args.seed + step)
    nparams = sum(p.numel() for p in model.parameters())
    print("config %s, %d parameters, %d training images, device %s, %d threads"
          % (config, nparams, n_train, device, torch.get_num_threads()), flush=True)

    def save():
        atomic_save(model.state_dict(), os.path.join(args.ckpt_dir, "model_%07d.pt" % step))
        atomic_save({"optimizer": opt.state_dict(), "step": step, "config": config,
                     "args": vars(args), "elapsed_s": elapsed_prev + time.time() - t0},
                    os.path.join(args.ckpt_dir, "optim_%07d.pt" % step))
        write_progress()
        # drop old checkpoints
        steps = sorted(int(re.match(r"model_(\d+)", os.path.basename(p)).group(1))
                       for p in glob.glob(os.path.join(args.ckpt_dir, "model_*.pt")))
        for s in steps[:-args.keep]:
            for pre in ("model", "optim"):
                p = os.path.join(args.ckpt_dir, "%s_%07d.pt" % (pre, s))
                if os.path.exists(p):
                    os.remove(p)
        print("saved checkpoint step %d" % step, flush=True)

    extra = {}

    def write_progress():
        recent = [h["train_bpd"] for h in history[-10:]]
        d = {"config": config, "step": step, "images_seen": step * args.batch,
             "epochs": step * args.batch / n_train, "latest": "model_%07d.pt" % step,
             "elapsed_s": elapsed_prev + time.time() - t0,
             "train_bpd": (sum(recent) / len(recent)) if recent else None,
             "history": history}
        d.update(extra)
        with open(prog_path + ".tmp", "w") as f:
            json.dump(d, f, indent=1)
        os.replace(prog_path + ".tmp", prog_path)

    t0 = time.time()
    last_save = t0
    model.train()
    if step == 0:  # data-dependent actnorm init on the first batch
        idx = rng.choice(n_train, args.batch, replace=False)
        u = torch.as_tensor(train_x[idx])
        with torch.no_grad():
            model(to_model_space(u, args.n_bits, torch.rand(u.shape).unsqueeze(1)).to(device))
    perm, pos = rng.permutation(n_train), 0
    run_bpd, run_n = 0.0, 0
    t_print = time.time()
    while True:
        if args.minutes is not None and time.time() - t0 > args.minutes * 60:
            break
        if args.epochs is not None and step * args.batch >= args.epochs * n_train:
            break
        if pos + args.batch > n_train:
            perm, pos = rng.permutation(n_train), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        u = torch.as_tensor(train_x[idx])
        x = to_model_space(u, args.n_bits, torch.rand(u.shape).unsqueeze(1)).to(device)
        lr = args.lr * min(1.0, (step + 1) / args.warmup) if args.warmup > 0 else args.lr
        for grp in opt.param_groups:
            grp["lr"] = lr
        log_p, logdet, _ = model(x)
        bpd = bpd_of(log_p + logdet, n_dim, args.n_bits)
        loss = bpd.mean()
        if not torch.isfinite(loss):
            print("step %d: non-finite loss, batch skipped" % step, flush=True)
            opt.zero_grad()
            continue
        opt.zero_grad()
        loss.backward()
        # A finite loss can still give an inf/NaN gradient (a near-singular
        # coupling scale); one such Adam step poisons every weight, so skip it.
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                               args.clip if args.clip > 0 else float("inf"))
        if not torch.isfinite(gnorm):
            print("step %d: non-finite gradient, batch skipped" % step, flush=True)
            opt.zero_grad()
            continue
        opt.step()
        step += 1
        run_bpd += loss.item()
        run_n += 1
        if step % args.print_every == 0:
            el = elapsed_prev + time.time() - t0
            history.append({"step": step, "epoch": round(step * args.batch / n_train, 4),
                            "elapsed_s": round(el, 1), "train_bpd": round(run_bpd / run_n, 4)})
            print("step %d epoch %.3f elapsed %.0fs lr %.2e train bpd %.4f (%.1f img/s)"
                  % (step, step * args.batch / n_train, el, lr, run_bpd / run_n,
                     run_n * args.batch / max(1e-9, time.time() - t_print)), flush=True)
            run_bpd, run_n = 0.0, 0
            t_print = time.time()
        if time.time() - last_save > args.save_minutes * 60:
            save()
            last_save = time.time()
    save()

    if args.test_n > 0:
        test_x, test_y = load_split("t10k", args.data_dir)
        if args.holdout_class is not None:
            inl = test_x[test_y != args.holdout_class][:args.test_n]
            out = test_x[test_y == args.holdout_class][:args.test_n]
            extra["test_bpd"] = evaluate(model, inl, args.n_bits, 250, device)
            extra["test_bpd_holdout_class"] = evaluate(model, out, args.n_bits, 250, device)
            print("test bpd (classes != %d, %d images) %.4f; held-out class %.4f"
                  % (args.holdout_class, len(inl), extra["test_bpd"], extra["test_bpd_holdout_class"]))
        else:
            sub = test_x[:args.test_n]
            extra["test_bpd"] = evaluate(model, sub, args.n_bits, 250, device)
            print("test bpd (%d t10k images, bin centre) %.4f" % (len(sub), extra["test_bpd"]))
        extra["test_n"] = args.test_n
        extra["test_step"] = step
        write_progress()


if __name__ == "__main__":
    main()
