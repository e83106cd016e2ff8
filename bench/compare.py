"""bench/compare: glowrt against ONNX Runtime 1.30 and PyTorch 1.13 on the same
Glow weights, the same inputs and the same thread count. See bench/README.md.

    bash bench/compare --arch cifar|celeba64|fmnist [--threads 2] [--batch 1,16]
                       [--mode density,sample] [--repeats N] [--quick] [--ckpt PATH]
"""
import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import resource  # noqa: F401  (os.wait4 rusage)
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"

ARCHS = {
    "cifar": dict(in_channel=3, size=32, n_block=3, n_flow=32, hidden=512, affine=True,
                  desc="CIFAR-10 Glow: 32x32x3, L=3, K=32, width 512, affine, LU"),
    "celeba64": dict(in_channel=3, size=64, n_block=4, n_flow=32, hidden=512, affine=False,
                     desc="CelebA 64x64 Glow: 64x64x3, L=4, K=32, width 512, additive, LU"),
    "tiny": dict(in_channel=3, size=16, n_block=2, n_flow=2, hidden=32, affine=True,
                 desc="tiny smoke-test Glow: 16x16x3, L=2, K=2, width 32, affine, LU"),
    "fmnist": dict(size=28, desc="the Fashion-MNIST model trained in models/"),
}
ENGINES = {
    "glowrt": "glowrt (library, C driver)",
    "ort": "ONNX Runtime 1.30 (node)",
    "torch": "PyTorch 1.13 (rosinality-style module)",
    "torch-precomp": "PyTorch 1.13 (W, W^-1 precomputed)",
}
PEERS = ["ort", "torch", "torch-precomp"]


def log(msg):
    print("[compare] " + msg, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def cpu_info():
    model, mhz, flags, fam, mod = "unknown", [], "", None, None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("CPU family:"):
                fam = line.split(":", 1)[1].strip()
            elif line.startswith("Model:"):
                mod = line.split(":", 1)[1].strip()
    except OSError:
        pass
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                mhz.append(float(line.split(":")[1]))
            elif line.startswith("flags") and not flags:
                flags = line
    isa = [x for x in ("avx2", "fma", "avx512f") if (" %s " % x) in flags + " "]
    if fam and mod:
        model += " (family %s, model %s)" % (fam, mod)
    return model, (max(mhz) / 1000.0 if mhz else None), isa


def git_commit():
    try:
        c = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return c + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def run_proc(cmd, env, cwd=ROOT):
    """Run a child, return (stdout, ru_maxrss in MiB: on Linux it includes the
    forked parent's RSS before exec, so the drivers report their VmHWM instead)."""
    out_path = os.path.join(WORK, "child.out")
    err_path = os.path.join(WORK, "child.err")
    with open(out_path, "w") as fo, open(err_path, "w") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    out = open(out_path).read()
    if p.returncode != 0:
        err = open(err_path).read()
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:3]), p.returncode, err.strip()[-2000:]))
    return out, ru.ru_maxrss / 1024.0


def last_json(out):
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in output: " + out[-500:])


# ---------------------------------------------------------------- model prep
def find_fmnist_ckpt():
    cands = []
    for pat in ("models/fmnist*.pt", "models/fmnist/*.pt", "models/*/fmnist*.pt", "models/ckpt/model_*.pt"):
        cands += sorted(glob.glob(os.path.join(ROOT, pat)), key=os.path.getmtime)
        if cands:
            return cands[-1]
    return None


def prepare_model(a, arch):
    """State dict, .glow and the two ONNX graphs in WORK (cached by a key)."""
    import torch
    import compare_common as cc
    sd_path = os.path.join(WORK, "model.pt")
    if a.ckpt:
        src = a.ckpt
        key = "ckpt:%s:%d:%d" % (os.path.abspath(src), os.path.getsize(src), int(os.path.getmtime(src)))
    else:
        src = None
        key = "random:%s:%d" % (json.dumps(ARCHS[a.arch], sort_keys=True), a.seed)
    key = hashlib.sha1((key + ":v2").encode()).hexdigest()[:16]
    meta_path = os.path.join(WORK, "model.json")
    files = [sd_path, os.path.join(WORK, "model.glow"), os.path.join(WORK, "density.onnx"),
             os.path.join(WORK, "sample.onnx")]
    if not a.fresh and os.path.exists(meta_path) and all(os.path.exists(f) for f in files):
        meta = json.load(open(meta_path))
        if meta.get("key") == key:
            log("reusing model files in %s" % os.path.relpath(WORK, ROOT))
            return meta
    t0 = time.time()
    if src:
        shutil.copyfile(src, sd_path)
        size = arch["size"]
        log("checkpoint %s" % src)
    else:
        import glow
        size = arch["size"]
        log("building random model (%s), actnorm data-initialised, parameters perturbed" % arch["desc"])
        torch.set_num_threads(a.threads)
        m = glow.random_model(arch["in_channel"], arch["n_flow"], arch["n_block"], affine=arch["affine"],
                              conv_lu=True, hidden=arch["hidden"], height=size, width=size, seed=a.seed)
        torch.save(m.state_dict(), sd_path)
        del m
    log("export .glow (models/export.py, float64 self-check)")
    subprocess.run([PY, os.path.join(ROOT, "models", "export.py"), "rosinality", sd_path, "-o",
                    files[1], "--image-size", str(size), "--n-bits", "8"], check=True, cwd=ROOT)
    model, info = cc.build_model(sd_path)
    cc.precompute(model)
    c = info["in_channels"]
    d = c * size * size
    log("export ONNX (opset 13): density and sampling graphs, 1x1 convs precomputed (W^-1 in float64)")
    import warnings
    warnings.filterwarnings("ignore")
    with torch.no_grad():
        ex = torch.rand(2, c, size, size) - 0.5
        torch.onnx.export(cc.Density(model), (ex,), files[2], opset_version=13, input_names=["x"],
                          output_names=["log_p"], dynamic_axes={"x": {0: "n"}, "log_p": {0: "n"}})
        ee = torch.randn(2, d) * 0.7
        torch.onnx.export(cc.Sampler(model, size, size), (ee,), files[3], opset_version=13,
                          input_names=["eps"], output_names=["x"], dynamic_axes={"eps": {0: "n"}, "x": {0: "n"}})
    try:
        import onnx
        for f in files[2:]:
            onnx.checker.check_model(f)
    except ImportError:
        log("python3-onnx missing: ONNX files not checked")
    meta = dict(key=key, size=size, in_channels=c, dim=d, source=src or "random_model(seed=%d)" % a.seed,
                info={k: v for k, v in info.items() if k != "lu_flags"},
                invconv="lu" if all(all(r) for r in info["lu_flags"]) else "plain/mixed",
                prep_s=time.time() - t0)
    json.dump(meta, open(meta_path, "w"), indent=1)
    return meta


def make_inputs(a, meta, n):
    """Density inputs x [n, C, H, W] (8-bit images at the bin centres) and the
    images whose latents are decoded in the sampling test."""
    rng = np.random.RandomState(a.seed + 1)
    c, s = meta["in_channels"], meta["size"]
    x = xs = None
    if a.arch == "fmnist":
        import gzip
        p = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
        if os.path.exists(p) and c == 1 and s == 28:
            raw = np.frombuffer(gzip.open(p).read()[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)
            x = (raw[:n].astype(np.float32) + 0.5) / 256.0 - 0.5
            xs = (raw[n:2 * n].astype(np.float32) + 0.5) / 256.0 - 0.5
            src = "Fashion-MNIST t10k images (bin centres)"
    if x is None:
        x = (rng.randint(0, 256, size=(n, c, s, s)).astype(np.float32) + 0.5) / 256.0 - 0.5
        xs = (rng.randint(0, 256, size=(n, c, s, s)).astype(np.float32) + 0.5) / 256.0 - 0.5
        src = "uniform random 8-bit images (bin centres)"
    x = np.ascontiguousarray(x, dtype=np.float32)
    x.tofile(os.path.join(WORK, "x.f32"))
    return x, np.ascontiguousarray(xs, dtype=np.float32), src


def reference(a, meta, x, xs):
    """float64 PyTorch (models/glow.py): log_p of x; the latents eps to decode
    (--eps encode: eps = encode(xs), the latents of other images, so the decode
    stays in the region the model maps well: an untrained random Glow's inverse
    overflows on prior draws; --eps prior: eps = 0.7 N(0, 1)); decode(eps). Cached."""
    import torch
    import compare_common as cc
    h = hashlib.sha1(x.tobytes() + xs.tobytes() + meta["key"].encode() + a.eps.encode()).hexdigest()[:16]
    p = os.path.join(WORK, "ref_%s.npz" % h)
    if not os.path.exists(p):
        log("float64 reference (PyTorch, models/glow.py in double) on %d images" % len(x))
        torch.set_num_threads(a.threads)
        model, _ = cc.build_model(os.path.join(WORK, "model.pt"))
        model = model.double()
        s = meta["size"]
        with torch.no_grad():
            lp = torch.cat([cc.Density(model)(torch.from_numpy(x[i:i + 16]).double())
                            for i in range(0, len(x), 16)]).numpy()
            if a.eps == "encode":
                eps = torch.cat([model.encode(torch.from_numpy(xs[i:i + 16]).double())
                                 for i in range(0, len(xs), 16)]).float()
            else:
                rng = np.random.RandomState(a.seed + 2)
                eps = torch.from_numpy((0.7 * rng.randn(len(x), meta["dim"])).astype(np.float32))
            xr = torch.cat([cc.Sampler(model, s, s)(eps[i:i + 16].double())
                            for i in range(0, len(eps), 16)]).numpy()
        np.savez(p, log_p=lp, eps=eps.numpy(), x=xr)
    r = np.load(p)
    r["eps"].tofile(os.path.join(WORK, "eps.f32"))
    if not np.all(np.isfinite(r["x"])):
        raise SystemExit("compare: the float64 decode of eps is not finite: use --eps encode")
    return r["log_p"], r["eps"], r["x"]


def build_driver():
    lib = os.path.join(ROOT, "build", "libglowrt.a")
    exe = os.path.join(WORK, "compare_glowrt")
    if not os.path.exists(lib):
        raise SystemExit("compare: %s missing: build glowrt first (cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "
                         "&& cmake --build build -j2)" % lib)
    cmd = ["gcc", "-O2", "-std=c11", "-I", os.path.join(ROOT, "include"), os.path.join(HERE, "compare_glowrt.c"),
           lib, "-ldnnl", "-fopenmp", "-lpng", "-lturbojpeg", "-lm", "-lpthread", "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 0:
        return exe
    log("gcc link against build/libglowrt.a failed, trying the CMake target compare_glowrt")
    subprocess.run(["cmake", "--build", os.path.join(ROOT, "build"), "--target", "compare_glowrt"], check=True)
    return os.path.join(ROOT, "build", "bench", "compare_glowrt")


def measure_ghz():
    """Core clock from bench/compare_ghz.c (dependent adds, 1 per cycle); the
    largest of 3 runs, each the best of 200. None if it cannot be built."""
    exe = os.path.join(WORK, "compare_ghz")
    r = subprocess.run(["gcc", "-O2", "-std=c11", os.path.join(HERE, "compare_ghz.c"), "-o", exe],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    vals = []
    for _ in range(3):
        try:
            vals.append(float(subprocess.run([exe], capture_output=True, text=True, check=True).stdout))
        except (subprocess.CalledProcessError, ValueError):
            pass
    return max(vals) if vals else None


def glowrt_flops(meta):
    out = subprocess.run([os.path.join(ROOT, "build", "glowrt"), "info", os.path.join(WORK, "model.glow")],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("work"):
            return float(line.split()[1]) * 1e9, line.strip()
    return None, None


# ---------------------------------------------------------------- main
def main():
    global WORK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=sorted(ARCHS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--mode", default="density,sample")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats after one warm-up batch "
                    "(default 3, --quick 2)")
    ap.add_argument("--images", type=int, default=None, help="images per repeat (default: 4 at batch 1, "
                    "2 batches otherwise; --quick: 2 at batch 1, 1 batch otherwise)")
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats")
    ap.add_argument("--engines", default="glowrt,ort,torch,torch-precomp")
    ap.add_argument("--ckpt", help="rosinality-layout checkpoint (state_dict) to use instead of random weights "
                    "(fmnist: default the newest models/fmnist*.pt or models/ckpt/model_*.pt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eps", choices=["encode", "prior"], help="latents to decode: the float64 encode of other "
                    "inputs (default for random weights) or 0.7 N(0, 1) draws (default with --ckpt)")
    ap.add_argument("--ghz", type=float, help="core clock for the FP32 peak (default: measured by bench/compare_ghz.c, "
                    "else the largest 'cpu MHz' of /proc/cpuinfo)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--fresh", action="store_true", help="rebuild the model files even if cached")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    a = ap.parse_args()
    arch = ARCHS[a.arch]
    batches = [int(b) for b in a.batch.split(",") if b]
    modes = [m for m in a.mode.split(",") if m]
    engines = [e for e in a.engines.split(",") if e]
    for m in modes:
        if m not in ("density", "sample"):
            ap.error("--mode: density and/or sample")
    for e in engines:
        if e not in ENGINES:
            ap.error("--engines: one of %s" % ",".join(ENGINES))
    reps = a.repeats or (2 if a.quick else 3)
    if a.eps is None:
        a.eps = "prior" if (a.ckpt or a.arch == "fmnist") else "encode"
    if a.arch == "fmnist" and not a.ckpt:
        a.ckpt = find_fmnist_ckpt()
        if not a.ckpt:
            print("compare: skipped fmnist: no Fashion-MNIST checkpoint found (looked for models/fmnist*.pt, "
                  "models/fmnist/*.pt, models/ckpt/model_*.pt); train one (models/README.md) or pass --ckpt PATH")
            return 0
    if a.ckpt and not os.path.exists(a.ckpt):
        print("compare: skipped %s: checkpoint %s does not exist" % (a.arch, a.ckpt))
        return 0
    WORK = os.path.join(HERE, "out", a.arch + ("-ckpt" if a.ckpt and a.arch != "fmnist" else ""))
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(a.results, exist_ok=True)
    sys.path.insert(0, HERE)
    node_ort = os.path.join(HERE, "node_modules", "onnxruntime-node")
    if "ort" in engines and not os.path.isdir(node_ort):
        raise SystemExit("compare: onnxruntime-node missing: (cd bench && npm ci --ignore-scripts)")

    load_start = loadavg()
    t_start = time.time()
    commit = git_commit()
    meta = prepare_model(a, arch)
    s, c, d = meta["size"], meta["in_channels"], meta["dim"]

    def n_images(b):
        if a.images:
            return max(a.images, b)
        if b == 1:
            return 2 if a.quick else 4
        return b if a.quick else 2 * b

    n_max = max(n_images(b) for b in batches)
    x, xs, data_src = make_inputs(a, meta, n_max)
    ref_lp, eps, ref_x = reference(a, meta, x, xs)
    eps_src = ("eps = encode(other images of the same kind), float64" if a.eps == "encode"
               else "eps = 0.7 N(0, 1) (temperature 0.7)")
    flops, info_line = glowrt_flops(meta)
    flops_calc = __import__("compare_common").flops_per_image(meta["info"], s, s)
    if flops is None or flops < 1e8:  # info prints 3 decimals of GFLOP: use the exact count for small models
        flops = flops_calc
    lib_built = datetime.datetime.utcfromtimestamp(os.path.getmtime(os.path.join(ROOT, "build", "libglowrt.a")))
    exe = build_driver() if "glowrt" in engines else None  # linked now: later rebuilds do not affect this run

    model_name, ghz_cpuinfo, isa = cpu_info()
    ghz_measured = None if a.ghz else measure_ghz()
    ghz = a.ghz or ghz_measured or ghz_cpuinfo or 2.45
    cores = os.cpu_count()
    used = min(a.threads, cores)
    peak = used * ghz * 2 * 8 * 2 * 1e9  # cores x GHz x 2 FMA units x 8 FP32 lanes x 2 FLOP

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONPATH=HERE)
    # glowrt's CLI spins briefly between parallel regions (GOMP_SPINCOUNT=1000,
    # runtime/cli/main.c) unless told otherwise; the driver and PyTorch (both
    # on libgomp) get the same, unless the caller's environment sets a wait
    # policy. ONNX Runtime has its own thread pool.
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = "1000"
    rows = []
    outs = {}
    for mode in modes:
        inp = os.path.join(WORK, "x.f32" if mode == "density" else "eps.f32")
        for b in batches:
            n = n_images(b)
            for e in engines:
                out = os.path.join(WORK, "out_%s_%s_b%d.bin" % (e, mode, b))
                if e == "glowrt":
                    cmd = [exe, os.path.join(WORK, "model.glow"), mode, str(b), str(n), str(reps), str(a.threads),
                           inp, out, str(s), str(s)]
                elif e == "ort":
                    onnx_path = os.path.join(WORK, "density.onnx" if mode == "density" else "sample.onnx")
                    cmd = ["node", os.path.join(HERE, "compare_ort.js"), onnx_path, mode, str(b), str(n), str(reps),
                           str(a.threads), inp, out, str(c), str(s), str(s)]
                else:
                    cmd = [PY, os.path.join(HERE, "compare_torch.py"), os.path.join(WORK, "model.pt"),
                           "rosinality" if e == "torch" else "precomp", mode, str(b), str(n), str(reps),
                           str(a.threads), inp, out, str(s), str(s)]
                la = loadavg()[0]
                log("%-13s %-7s b=%-3d %d images x %d repeats (load %.2f)" % (e, mode, b, n, reps, la))
                try:
                    stdout, rss = run_proc(cmd, env)
                except RuntimeError as err:
                    log("  FAILED: %s" % err)
                    rows.append(dict(engine=e, mode=mode, batch=b, error=str(err)[:500]))
                    continue
                j = last_json(stdout)
                if j.get("vm_hwm_kib", -1) > 0:
                    rss = j["vm_hwm_kib"] / 1024.0  # VmHWM of the engine's process image
                med = statistics.median(j["times_s"])
                per = med / n
                if mode == "density":
                    res = np.fromfile(out, dtype=np.float64)[:n]
                    ref = ref_lp[:n]
                    dev = np.abs(res - ref)
                    ok = bool(np.all(dev <= 1e-5 * np.abs(ref) + 1e-3))
                else:
                    res = np.fromfile(out, dtype=np.float32).reshape(n, -1)
                    ref = ref_x[:n].reshape(n, -1)
                    dev = np.abs(res.astype(np.float64) - ref)
                    ok = bool(np.all(dev <= 1e-4 * np.abs(ref) + 1e-3))
                outs[(e, mode, b)] = res
                row = dict(engine=e, mode=mode, batch=b, images=n, repeats=reps, times_s=j["times_s"],
                           median_s=med, ms_per_image=per * 1e3, images_per_s=1.0 / per,
                           gflops=flops / per / 1e9, pct_peak=100.0 * flops / per / peak, peak_rss_mib=rss,
                           max_dev_vs_f64=float(dev.max()), agree=ok, load1_before=la,
                           setup_s=j.get("setup_s"))
                if "isa" in j:
                    row["isa"] = j["isa"]
                rows.append(row)
                log("  %.1f ms/image, %.2f images/s, %.1f GFLOP/s, RSS %.0f MiB, max|d| vs f64 %.3g %s"
                    % (per * 1e3, 1 / per, flops / per / 1e9, rss, dev.max(), "ok" if ok else "DISAGREE"))
    load_end = loadavg()

    # pairwise glowrt vs peers on the same outputs
    pair = {}
    for (e, mode, b), res in outs.items():
        if e != "glowrt" and ("glowrt", mode, b) in outs:
            pair["%s/%s/b%d" % (e, mode, b)] = float(np.abs(outs[("glowrt", mode, b)].astype(np.float64)
                                                            - res.astype(np.float64)).max())
    by = {(r["engine"], r["mode"], r["batch"]): r for r in rows if "error" not in r}
    for r in rows:
        g = by.get(("glowrt", r.get("mode"), r.get("batch")))
        if g and "error" not in r and r["engine"] != "glowrt":
            r["glowrt_speedup"] = g["images_per_s"] / r["images_per_s"]
            r["glowrt_rss_ratio"] = g["peak_rss_mib"] / r["peak_rss_mib"]

    env_info = dict(
        arch=a.arch, arch_desc=arch["desc"], source=meta["source"], model=meta["info"], image_size=s, dim=d,
        data=data_src, eps=eps_src, threads=a.threads, batches=batches, modes=modes, repeats=reps, quick=a.quick,
        flops_per_image=flops, flops_computed=flops_calc, glowrt_info_work=info_line,
        cpu=model_name, cores=cores, isa=isa, ghz=ghz, ghz_source=("--ghz" if a.ghz else "measured (bench/compare_ghz.c: dependent adds)" if ghz_measured
                                   else "/proc/cpuinfo cpu MHz (max)"),
        ghz_cpuinfo=ghz_cpuinfo, ghz_measured=ghz_measured,
        fp32_peak_gflops=peak / 1e9,
        fp32_peak_formula="%d cores x %.3f GHz x 2 FMA units x 8 FP32 lanes (AVX2) x 2 FLOP" % (used, ghz),
        load_start=load_start, load_end=load_end, date=datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit, libglowrt_built=lib_built.strftime("%Y-%m-%d %H:%M UTC"),
        python=platform.python_version(), wall_s=time.time() - t_start,
        tolerance_density="|d| <= 1e-5|log_p| + 1e-3 vs PyTorch float64",
        tolerance_sample="|dx| <= 1e-4|x| + 1e-3 vs PyTorch float64 decode",
        max_dev_glowrt_vs_peer=pair)
    import torch
    env_info["torch"] = torch.__version__
    name = "compare_%s_t%d%s" % (a.arch, a.threads, a.tag)
    jpath = os.path.join(a.results, name + ".json")
    json.dump(dict(env=env_info, rows=rows), open(jpath, "w"), indent=1)
    md = markdown(env_info, rows, engines)
    mpath = os.path.join(a.results, name + ".md")
    open(mpath, "w").write(md)
    ppath = os.path.join(a.results, name + ".png")
    try:
        chart(env_info, rows, engines, ppath)
    except ImportError:
        log("matplotlib missing (apt-get install python3-matplotlib): no chart")
        ppath = None
    print(md)
    log("wrote %s, %s%s" % (os.path.relpath(mpath, ROOT), os.path.relpath(jpath, ROOT),
                            ", " + os.path.relpath(ppath, ROOT) if ppath else ""))
    bad = [r for r in rows if "error" in r or not r.get("agree", True)]
    return 1 if bad else 0


def markdown(env, rows, engines):
    L = []
    L.append("### %s, %d threads" % (env["arch_desc"], env["threads"]))
    L.append("")
    L.append("- machine: %s, %d cores (%s), %.2f GHz (%s; /proc/cpuinfo says %.2f); FP32 FMA peak %.1f GFLOP/s = %s"
             % (env["cpu"], env["cores"], "+".join(env["isa"]), env["ghz"], env["ghz_source"],
                env["ghz_cpuinfo"] or 0, env["fp32_peak_gflops"], env["fp32_peak_formula"]))
    L.append("- load average (1/5/15 min) at start %s, at end %s (shared machine: other jobs were running)"
             % ("/".join("%.2f" % v for v in env["load_start"]), "/".join("%.2f" % v for v in env["load_end"])))
    L.append("- %s, commit %s (build/libglowrt.a built %s), PyTorch %s, ONNX Runtime 1.30 (node)"
             % (env["date"], env["commit"], env["libglowrt_built"], env["torch"]))
    L.append("- weights: %s; inputs: %s; sampling decodes %s" % (env["source"], env["data"], env["eps"]))
    L.append("- work: %.3f GFLOP per image per direction (%s)" % (env["flops_per_image"] / 1e9,
                                                                  env["glowrt_info_work"] or "computed"))
    L.append("- timing: one warm-up batch, then %d repeats over the images; median; peak RSS of each "
             "engine's own process (one process per engine, mode and batch)" % env["repeats"])
    L.append("")
    L.append("| mode | batch | engine | ms/image | images/s | GFLOP/s | % peak | peak RSS MiB | glowrt speed-up | "
             "max dev vs f64 |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            L.append("| %s | %d | %s | failed | | | | | | |" % (r["mode"], r["batch"], ENGINES[r["engine"]]))
            continue
        sp = "%.2fx" % r["glowrt_speedup"] if "glowrt_speedup" in r else ""
        L.append("| %s | %d | %s | %.1f | %.2f | %.1f | %.1f | %.0f | %s | %.2g%s |"
                 % (r["mode"], r["batch"], ENGINES[r["engine"]], r["ms_per_image"], r["images_per_s"], r["gflops"],
                    r["pct_peak"], r["peak_rss_mib"], sp, r["max_dev_vs_f64"], "" if r["agree"] else " FAIL"))
    L.append("")
    L.append("glowrt speed-up = glowrt images/s / the peer's images/s (> 1: glowrt is faster). Agreement: density "
             "%s; sampling %s." % (env["tolerance_density"], env["tolerance_sample"]))
    if env["max_dev_glowrt_vs_peer"]:
        L.append("Max |glowrt - peer| on the same inputs: " + ", ".join(
            "%s %.2g" % (k, v) for k, v in sorted(env["max_dev_glowrt_vs_peer"].items())) + ".")
    L.append("")
    return "\n".join(L)


def chart(env, rows, engines, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = []
    for r in rows:
        g = (r["mode"], r["batch"])
        if g not in groups:
            groups.append(g)
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=90)
    w = 0.8 / max(1, len(engines))
    colors = {"glowrt": "#d62728", "ort": "#1f77b4", "torch": "#7f7f7f", "torch-precomp": "#bcbd22"}
    for k, e in enumerate(engines):
        xs, ys = [], []
        for i, g in enumerate(groups):
            r = next((r for r in rows if (r["mode"], r["batch"], r["engine"]) == (g[0], g[1], e) and
                      "error" not in r), None)
            if r:
                xs.append(i + (k - (len(engines) - 1) / 2) * w)
                ys.append(r["images_per_s"])
        bars = ax.bar(xs, ys, w, label=ENGINES[e], color=colors.get(e))
        for bx, by_ in zip(xs, ys):
            ax.text(bx, by_, "%.2g" % by_, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["%s b=%d" % g for g in groups])
    ax.set_ylabel("images / s (higher is better)")
    ax.set_title("%s, %d threads, %s, load %.1f -> %.1f, %s" % (env["arch"], env["threads"], env["cpu"],
                 env["load_start"][0], env["load_end"][0], env["commit"]), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    del bars


WORK = None

if __name__ == "__main__":
    sys.exit(main())
