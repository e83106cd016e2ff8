"""bench/scaling.py: glowrt, ONNX Runtime and PyTorch across thread counts on
one machine (issue 4, "Scaling, on the 16-core machine"). Normally started by
bench/device-scaling, which builds glowrt first; see bench/README.md
("Scaling on the 16-core device").

    python3 bench/scaling.py --glowrt-exe build/bench/compare_glowrt [--glowrt-cli build/glowrt]
        [--arch cifar|tiny] [--threads 1,2,4,8,16] [--batches 16,1] [--torch-threads 16]
        [--wait spin|passive|active] [--budget S] [--out DIR] [--work DIR]

Same weights, inputs, tolerance and per-process timing as bench/compare (its
ARCHS, make_inputs, compare_common's model code and drivers): random_model
weights, 8-bit images at the bin centres, log_p within 1e-5|log_p| + 1e-3
nats of models/glow.py in float64. Each (engine, mode, batch, threads) runs in
its own process: load, one warm-up batch, then REPEATS timed passes; median.
Results are rewritten after every run, so a run cut short still leaves them.
"""
import argparse
import datetime
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compare  # noqa: E402  (ARCHS, make_inputs, cpu_info, measure_ghz: bench/compare's own)

PY = sys.executable
T0 = time.time()
ENGINES = {
    "glowrt": "glowrt (library, C driver)",
    "ort": "ONNX Runtime (Python API)",
    "torch": "PyTorch (rosinality-style module)",
    "torch-precomp": "PyTorch (W, W^-1 precomputed)",
}
PEERS = compare.PEERS


def log(msg):
    print("[scaling %s +%5.1fs] %s" % (datetime.datetime.utcnow().strftime("%H:%M:%S"), time.time() - T0, msg),
          flush=True)


# ---------------------------------------------------------------- machine
def machine_info(work):
    """lscpu fields, ISA flags, affinity, cgroup quota, measured GHz."""
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    info["lscpu"] = out
    fields = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    info["model_name"] = fields.get("Model name", "unknown")
    for k, key in (("CPU(s)", "cpus"), ("Thread(s) per core", "threads_per_core"), ("Core(s) per socket",
                   "cores_per_socket"), ("Socket(s)", "sockets"), ("NUMA node(s)", "numa_nodes")):
        try:
            info[key] = int(fields.get(k, ""))
        except ValueError:
            info[key] = os.cpu_count() if key == "cpus" else None
    info["caches"] = {k: fields[k] for k in ("L1d cache", "L2 cache", "L3 cache") if k in fields}
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and info["model_name"] == "unknown":
                info["model_name"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = " " + line.split(":", 1)[1].strip() + " "
                break
    info["flags"] = {x: (" %s " % x) in flags for x in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                                        "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")}
    info["affinity"] = len(os.sched_getaffinity(0))
    info["os_cpu_count"] = os.cpu_count()
    try:
        info["cgroup_cpu_max"] = open("/sys/fs/cgroup/cpu.max").read().strip()
    except OSError:
        info["cgroup_cpu_max"] = None
    compare.WORK = work
    try:
        info["ghz"] = compare.measure_ghz()
    except Exception as e:  # noqa: BLE001
        log("GHz measurement failed: %s" % e)
        info["ghz"] = None
    try:
        info["mem"] = [line.strip() for line in open("/proc/meminfo") if line.startswith("MemTotal")][0]
    except (OSError, IndexError):
        info["mem"] = None
    info["kernel"] = platform.release()
    return info


def git_commit():
    """The commit (git may be absent where the working tree was copied) and a
    SHA-1 of the sources that make the timed code, to match results later."""
    import hashlib
    h = hashlib.sha1()
    for d in ("include", "runtime", "kernels", "bench"):
        for dp, dn, fn in sorted(os.walk(os.path.join(ROOT, d))):
            dn[:] = sorted(x for x in dn if x not in ("out", "node_modules", "results", "__pycache__"))
            for f in sorted(fn):
                if f.endswith((".c", ".h", ".py")):
                    h.update(f.encode())
                    h.update(open(os.path.join(dp, f), "rb").read())
    c = compare.git_commit() or "unknown"
    return "%s (sources sha1 %s)" % (c, h.hexdigest()[:12])


# ---------------------------------------------------------------- model
def onnx_export(module, args, path, in_name, out_name):
    """torch.onnx.export at opset 13 with a dynamic batch axis. PyTorch >= 2.9
    defaults to the dynamo exporter: ask for the TorchScript one (as PyTorch
    1.13 does) where the parameter exists, and fall back to dynamo at opset 18."""
    import torch
    kw = dict(opset_version=13, input_names=[in_name], output_names=[out_name],
              dynamic_axes={in_name: {0: "n"}, out_name: {0: "n"}})
    has_dynamo = "dynamo" in inspect.signature(torch.onnx.export).parameters
    if has_dynamo:
        kw["dynamo"] = False
    try:
        torch.onnx.export(module, args, path, **kw)
        return "torchscript exporter, opset 13"
    except Exception as e:  # noqa: BLE001
        if not has_dynamo:
            raise
        log("  TorchScript ONNX exporter failed (%s: %s); trying dynamo=True, opset 18"
            % (type(e).__name__, str(e)[:300]))
        plain_actnorm(module)
        kw.update(dynamo=True, opset_version=18)
        torch.onnx.export(module, args, path, **kw)
        return "dynamo exporter, opset 18"


def plain_actnorm(module):
    """ActNorm.forward without its data-dependent first-call initialisation
    (`if self.initialized.item() == 0`), which torch.export cannot trace; every
    ActNorm of a loaded model is initialised, so the function is the same."""
    import glow
    import torch

    def fwd(self, x):
        return self.scale * (x + self.loc), x.shape[2] * x.shape[3] * torch.sum(torch.log(torch.abs(self.scale)))
    for m in module.modules():
        if isinstance(m, glow.ActNorm):
            assert int(m.initialized) == 1, "ActNorm not initialised"
            m.forward = types.MethodType(fwd, m)


def prepare(a, arch, work, state, want_sample):
    """model.pt (random_model), then in parallel processes: model.glow
    (models/export.py), density.onnx and sample.onnx (export_job; the
    TorchScript exporter runs on one core for minutes at cifar's size). Returns
    the running jobs: wait_jobs() collects them before anything is timed."""
    import torch
    import compare_common as cc
    import glow
    torch.set_num_threads(os.cpu_count())
    sd_path = os.path.join(work, "model.pt")
    t = time.time()
    log("random_model (%s), seed %d" % (arch["desc"], a.seed))
    m = glow.random_model(arch["in_channel"], arch["n_flow"], arch["n_block"], affine=arch["affine"], conv_lu=True,
                          hidden=arch["hidden"], height=arch["size"], width=arch["size"], seed=a.seed)
    torch.save(m.state_dict(), sd_path)
    del m
    state["prep"]["random_model_s"] = time.time() - t
    log("  %.1f s, %.0f MB" % (time.time() - t, os.path.getsize(sd_path) / 1e6))
    _, info = cc.build_model(sd_path)
    state["info"] = {k: v for k, v in info.items() if k != "lu_flags"}
    jobs = []

    def start(name, cmd, engine):
        f = open(os.path.join(work, "job_%s.log" % name), "w")
        jobs.append(dict(name=name, engine=engine, t=time.time(), log=f.name,
                         p=subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)))
        f.close()
    for f in ("model.glow", "density.onnx", "sample.onnx"):
        if os.path.exists(os.path.join(work, f)):
            os.remove(os.path.join(work, f))
    if "glowrt" in state["engines"] and "glowrt" not in state["failed"]:
        cmd = [PY, os.path.join(ROOT, "models", "export.py"), "rosinality", sd_path, "-o",
               os.path.join(work, "model.glow"), "--image-size", str(arch["size"]), "--n-bits", "8"]
        if not a.export_check:
            cmd.append("--no-check")
        start("glow", cmd, "glowrt")
    if "ort" in state["engines"] and ("ort" not in state["failed"] or a.force_onnx):
        start("onnx-density", [PY, os.path.abspath(__file__), "--job", "onnx-density", "--work", work,
                               "--arch", a.arch], "ort")
        if want_sample:
            start("onnx-sample", [PY, os.path.abspath(__file__), "--job", "onnx-sample", "--work", work,
                                  "--arch", a.arch], "ort-sample")
    log("started in parallel: %s (models/export.py%s; ONNX opset 13, 1x1 convs precomputed, W^-1 in float64)"
        % (", ".join(j["name"] for j in jobs), "" if a.export_check else " --no-check: the engines are checked "
           "against float64 below"))
    return jobs


def wait_jobs(jobs, state, limit_s):
    """Wait for the preparation processes, each killed past limit_s seconds
    from the start (the sampling graph's 45 s after the density graph's: an
    exporter still running would perturb the timings); a failed one marks its
    engine failed."""
    done_density = None
    for j in jobs:
        lim = limit_s
        if j["name"] == "onnx-sample" and done_density:
            lim = min(limit_s, done_density - T0 + 45)
        try:
            j["p"].wait(timeout=max(1, lim - (time.time() - T0)))
            rc = j["p"].returncode
        except subprocess.TimeoutExpired:
            j["p"].kill()
            j["p"].wait()
            rc = "killed: still running %.0f s after the start" % (time.time() - T0)
        dt = time.time() - j["t"]
        if j["name"] == "onnx-density":
            done_density = time.time()
        state["prep"][j["name"] + "_s"] = dt
        tail = open(j["log"]).read().strip()
        if rc != 0:
            why = "%s failed (%s): %s" % (j["name"], rc, tail[-600:])
            if j["engine"] == "ort-sample":
                state["sample_failed_ort"] = why
            else:
                state["failed"][j["engine"]] = why
            log("  FAILED: " + why)
        else:
            last = tail.splitlines()[-1] if tail else ""
            log("  %s done: %.1f s %s" % (j["name"], dt, last if j["name"].startswith("onnx") else ""))
            if j["name"] in ("onnx-density", "onnx-sample"):
                state["env"][j["name"].replace("-", "_")] = last


def export_job(job, work, arch_name):
    """--job onnx-density|onnx-sample: one ONNX graph of work/model.pt."""
    import warnings
    import torch
    import compare_common as cc
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    s = compare.ARCHS[arch_name]["size"]
    t = time.time()
    model, info = cc.build_model(os.path.join(work, "model.pt"))
    cc.precompute(model)
    c = info["in_channels"]
    with torch.no_grad():
        if job == "onnx-density":
            path = os.path.join(work, "density.onnx")
            how = onnx_export(cc.Density(model), (torch.rand(2, c, s, s) - 0.5,), path, "x", "log_p")
        else:
            path = os.path.join(work, "sample.onnx")
            how = onnx_export(cc.Sampler(model, s, s), (torch.randn(2, c * s * s) * 0.7,), path, "eps", "x")
    check_onnx(path)
    print("%s, %.0f MB, %.1f s" % (how, os.path.getsize(path) / 1e6, time.time() - t), flush=True)


def check_onnx(path):
    try:
        import onnx
    except ImportError:
        log("  onnx missing: graph not checked")
        return
    onnx.checker.check_model(path)


def reference_density(work, x):
    import torch
    import compare_common as cc
    torch.set_num_threads(os.cpu_count())
    model, _ = cc.build_model(os.path.join(work, "model.pt"))
    model = model.double()
    with torch.no_grad():
        return torch.cat([cc.Density(model)(torch.from_numpy(x[i:i + 16]).double())
                          for i in range(0, len(x), 16)]).numpy()


def reference_sampling(work, xs, size):
    """eps = float64 encode of other images (as bench/compare --eps encode: an
    untrained random Glow's inverse overflows on prior draws) -> eps.f32, and
    the float64 decode of eps."""
    import torch
    import compare_common as cc
    torch.set_num_threads(os.cpu_count())
    model, _ = cc.build_model(os.path.join(work, "model.pt"))
    m64 = model.double()
    with torch.no_grad():
        eps = torch.cat([m64.encode(torch.from_numpy(xs[i:i + 16]).double()) for i in range(0, len(xs), 16)])
        ref_x = torch.cat([cc.Sampler(m64, size, size)(eps[i:i + 16]) for i in range(0, len(eps), 16)]).numpy()
    np.ascontiguousarray(eps.float().numpy()).tofile(os.path.join(work, "eps.f32"))
    if not np.all(np.isfinite(ref_x)):
        raise RuntimeError("the float64 decode of eps is not finite")
    return ref_x


# ---------------------------------------------------------------- runs
def run_one(a, state, e, mode, b, threads, n, reps, work, ref, wait, timeout):
    """One engine process; returns the row (with 'error' on failure)."""
    s, c = state["size"], state["info"]["in_channels"]
    inp = os.path.join(work, "x.f32" if mode == "density" else "eps.f32")
    tag = "%s_%s_b%d_t%d_%s" % (e, mode, b, threads, wait)
    out = os.path.join(work, "out_%s.bin" % tag)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if wait == "spin":  # glowrt's CLI default and bench/compare's: a short spin, then sleep
        env["GOMP_SPINCOUNT"] = "1000"
    else:
        env["OMP_WAIT_POLICY"] = wait.upper()
    if a.bind:
        env.update(OMP_PROC_BIND="close", OMP_PLACES="cores")
    if e == "glowrt":
        cmd = [a.glowrt_exe, os.path.join(work, "model.glow"), mode, str(b), str(n), str(reps), str(threads), inp,
               out, str(s), str(s)]
        if a.ld_path:
            env["LD_LIBRARY_PATH"] = a.ld_path + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")
            env["OCL_ICD_VENDORS"] = os.path.join(work, "no-opencl-vendors")  # oneDNN CPU only: load no GPU ICD
    elif e == "ort":
        cmd = [PY, os.path.join(HERE, "scaling_ort.py"), os.path.join(work, mode + ".onnx"), mode, str(b), str(n),
               str(reps), str(threads), inp, out, str(c), str(s), str(s)]
    else:
        cmd = [PY, os.path.join(HERE, "compare_torch.py"), os.path.join(work, "model.pt"),
               "rosinality" if e == "torch" else "precomp", mode, str(b), str(n), str(reps), str(threads), inp, out,
               str(s), str(s)]
    row = dict(engine=e, mode=mode, batch=b, threads=threads, wait=wait, images=n, repeats=reps)
    la = compare.loadavg()[0]
    log("%-13s %-7s b=%-2d t=%-2d %-7s %d images x %d repeats (load %.2f)" % (e, mode, b, threads, wait, n, reps, la))
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=max(5, timeout))
    except subprocess.TimeoutExpired:
        row["error"] = "timed out after %.0f s" % timeout
        log("  FAILED: " + row["error"])
        return row
    except OSError as err:
        row["error"] = str(err)
        log("  FAILED: " + row["error"])
        return row
    row["wall_s"] = time.time() - t
    if p.returncode != 0:
        row["error"] = "exit %d: %s" % (p.returncode, (p.stderr or p.stdout).strip()[-800:])
        log("  FAILED: " + row["error"])
        return row
    try:
        j = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")][-1]
    except (IndexError, ValueError):
        row["error"] = "no JSON line: " + p.stdout[-300:]
        log("  FAILED: " + row["error"])
        return row
    med = statistics.median(j["times_s"])
    per = med / n
    try:
        if mode == "density":
            res = np.fromfile(out, dtype=np.float64)[:n]
            r = ref[:n] if ref is not None else np.full(n, np.nan)
            dev = np.abs(res - r)
            ok = bool(np.all(dev <= 1e-5 * np.abs(r) + 1e-3))
        else:
            res = np.fromfile(out, dtype=np.float32).reshape(n, -1).astype(np.float64)
            r = ref[:n].reshape(n, -1)
            dev = np.abs(res - r)
            ok = bool(np.all(dev <= 1e-4 * np.abs(r) + 1e-3))
    except Exception as err:  # noqa: BLE001  (a short or missing output file)
        row["error"] = "output %s unreadable: %s: %s" % (os.path.basename(out), type(err).__name__, err)
        log("  FAILED: " + row["error"])
        return row
    flops = state["flops"]
    row.update(times_s=j["times_s"], median_s=med, ms_per_image=per * 1e3, images_per_s=1.0 / per,
               gflops=flops / per / 1e9, peak_rss_mib=j.get("vm_hwm_kib", -1) / 1024.0, setup_s=j.get("setup_s"),
               max_dev_vs_f64=float(dev.max()), agree=ok, load1_before=la)
    for k in ("isa", "ort_version", "providers"):
        if k in j:
            row[k] = j[k]
    if e == "torch" or e == "torch-precomp":
        row["torch_threads_reported"] = j.get("threads")
    log("  %.2f ms/image, %.1f images/s, %.1f GFLOP/s, RSS %.0f MiB, max|d| vs f64 %.3g %s"
        % (per * 1e3, 1 / per, flops / per / 1e9, row["peak_rss_mib"], dev.max(), "ok" if ok else "DISAGREE"))
    return row


# ---------------------------------------------------------------- report
def analyse(state):
    rows = [r for r in state["rows"] if "error" not in r]
    key = {(r["engine"], r["mode"], r["batch"], r["threads"], r["wait"]): r for r in rows}
    for r in rows:
        one = key.get((r["engine"], r["mode"], r["batch"], 1, r["wait"]))
        if one:
            r["speedup_vs_1t"] = r["images_per_s"] / one["images_per_s"]
            r["efficiency"] = r["speedup_vs_1t"] / r["threads"]
        g = key.get(("glowrt", r["mode"], r["batch"], r["threads"], r["wait"]))
        if g and r["engine"] != "glowrt":
            r["glowrt_speedup"] = g["images_per_s"] / r["images_per_s"]
    tmax = state["tmax"]
    wait = state["wait"]
    tg = {}
    g16 = key.get(("glowrt", "density", 16, tmax, wait))
    peers = [key[k] for k in key if k[0] in PEERS and k[1:] == ("density", 16, tmax, wait) and key[k]["agree"]]
    best_peer = min(peers, key=lambda r: r["ms_per_image"]) if peers else None
    tg["ms_per_image"] = dict(target="glowrt <= 12 ms/image at %d threads, batch 16 (density)" % tmax,
                              value=g16["ms_per_image"] if g16 else None,
                              met=bool(g16 and g16["ms_per_image"] <= 12.0))
    tg["vs_peer"] = dict(target=">= 1.5x the faster peer at %d threads, batch 16 (density)" % tmax,
                         value=(g16["images_per_s"] / best_peer["images_per_s"]) if g16 and best_peer else None,
                         peer=best_peer["engine"] if best_peer else None,
                         peers_measured=sorted(r["engine"] for r in peers),
                         met=bool(g16 and best_peer and g16["images_per_s"] >= 1.5 * best_peer["images_per_s"]))
    tg["efficiency"] = dict(target="glowrt 1 -> %d thread parallel efficiency >= 60%% (batch 16, density)" % tmax,
                            value=g16.get("efficiency") if g16 else None,
                            met=bool(g16 and g16.get("efficiency") is not None and g16["efficiency"] >= 0.6))
    state["targets"] = tg


def fmt(v, f="%.2f"):
    return "" if v is None else f % v


def markdown(state):
    env = state["env"]
    mi = env["machine"]
    L = ["### Scaling: %s, %s" % (env["arch_desc"], mi["model_name"]), ""]
    fl = mi["flags"]
    L.append("- machine: %s; %s CPUs (%s threads/core, %s cores/socket, %s sockets, %s NUMA nodes), affinity %d, "
             "cgroup cpu.max %s; %s; avx512f %s, avx512_bf16 %s, amx_tile %s, amx_bf16 %s; %s GHz measured "
             "(bench/compare_ghz.c); kernel %s"
             % (mi["model_name"], mi["cpus"], mi["threads_per_core"], mi["cores_per_socket"], mi["sockets"],
                mi["numa_nodes"], mi["affinity"], mi["cgroup_cpu_max"], mi.get("mem"),
                *["yes" if fl[k] else "no" for k in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")],
                fmt(mi["ghz"]), mi["kernel"]))
    L.append("- %s, commit %s; Python %s, PyTorch %s, ONNX Runtime %s, numpy %s; glowrt ISA %s; %s"
             % (env["date"], env["commit"], env["python"], env["torch"], env.get("ort") or "unavailable",
                env["numpy"], env.get("glowrt_isa") or "?", env.get("build") or ""))
    L.append("- weights: random_model(seed=%d); inputs: %s; work %.3f GFLOP per image per direction; ONNX "
             "density graph: %s; sampling graph: %s" % (env["seed"], env["data"], state["flops"] / 1e9,
                                                        env.get("onnx_density", "none"),
                                                        env.get("onnx_sample", "none")))
    L.append("- wait policy %s for glowrt and PyTorch (libgomp; spin = GOMP_SPINCOUNT=1000, bench/compare's default); ONNX Runtime "
             "uses its own pool (spinning by default). %s"
             % (state["wait"].upper(), "OMP_PROC_BIND=close, OMP_PLACES=cores" if env["bind"] else "no pinning"))
    L.append("- timing: one process per row; load, one warm-up batch, then the repeats over the images; median "
             "repeat. Efficiency = (images/s at N) / (N x images/s at 1 thread)")
    L.append("- load average at start %s, at end %s; wall %.0f s"
             % ("/".join("%.2f" % v for v in env["load_start"]), "/".join("%.2f" % v for v in env.get("load_end", [])),
                time.time() - T0))
    L.append("")
    L.append("| mode | batch | threads | wait | engine | ms/image | images/s | GFLOP/s | x 1 thread | efficiency | "
             "glowrt speed-up | RSS MiB | max dev vs f64 |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = {e: i for i, e in enumerate(ENGINES)}
    for r in sorted(state["rows"], key=lambda r: (r["mode"] != "density", -r["batch"], r["wait"] != state["wait"],
                                                  order[r["engine"]], r["threads"])):
        if "error" in r:
            L.append("| %s | %d | %d | %s | %s | failed: %s | | | | | | | |"
                     % (r["mode"], r["batch"], r["threads"], r["wait"], ENGINES[r["engine"]],
                        r["error"].replace("|", "/").replace("\n", " ")[:160]))
            continue
        L.append("| %s | %d | %d | %s | %s | %.2f | %.1f | %.1f | %s | %s | %s | %.0f | %.2g%s |"
                 % (r["mode"], r["batch"], r["threads"], r["wait"], ENGINES[r["engine"]], r["ms_per_image"],
                    r["images_per_s"], r["gflops"], fmt(r.get("speedup_vs_1t")),
                    fmt(100 * r["efficiency"], "%.0f%%") if "efficiency" in r else "",
                    fmt(r.get("glowrt_speedup"), "%.2fx"), r["peak_rss_mib"], r["max_dev_vs_f64"],
                    "" if r["agree"] else " FAIL"))
    L.append("")
    for e, why in sorted(state["failed"].items()):
        L.append("- %s not measured: %s" % (ENGINES[e], why))
    if state["failed"]:
        L.append("")
    tg = state.get("targets")
    if tg:
        L.append("| target (issue 4) | measured | |")
        L.append("|---|---|---|")
        v = tg["ms_per_image"]["value"]
        L.append("| %s | %s | %s |" % (tg["ms_per_image"]["target"], fmt(v, "%.2f ms/image"),
                                       "met" if tg["ms_per_image"]["met"] else "not met"))
        v = tg["vs_peer"]["value"]
        L.append("| %s | %s | %s |" % (tg["vs_peer"]["target"], (fmt(v, "%.2fx") + " vs " + ENGINES[tg["vs_peer"]
                                       ["peer"]]) if v else "no peer measured",
                                       "met" if tg["vs_peer"]["met"] else "not met"))
        v = tg["efficiency"]["value"]
        L.append("| %s | %s | %s |" % (tg["efficiency"]["target"], fmt(v and 100 * v, "%.0f%%"),
                                       "met" if tg["efficiency"]["met"] else "not met"))
        L.append("")
    L.append("Agreement: density |d| <= 1e-5|log_p| + 1e-3 nats, sampling |dx| <= 1e-4|x| + 1e-3, both against "
             "models/glow.py in float64 on the same inputs.")
    L.append("")
    return "\n".join(L)


def chart(state, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401
    rows = [r for r in state["rows"] if "error" not in r and r["mode"] == "density" and r["wait"] == state["wait"]]
    colors = {"glowrt": "#d62728", "ort": "#1f77b4", "torch": "#7f7f7f", "torch-precomp": "#bcbd22"}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.3), dpi=90)
    threads = sorted({r["threads"] for r in rows})
    for e in ENGINES:
        for b, style in ((16, "-o"), (1, "--s")):
            rr = sorted((r for r in rows if r["engine"] == e and r["batch"] == b), key=lambda r: r["threads"])
            if not rr:
                continue
            lab = "%s, batch %d" % (ENGINES[e], b)
            ax.plot([r["threads"] for r in rr], [r["images_per_s"] for r in rr], style, color=colors[e], label=lab,
                    ms=4)
            re = [r for r in rr if "efficiency" in r]
            if len(re) > 1:
                ax2.plot([r["threads"] for r in re], [100 * r["efficiency"] for r in re], style, color=colors[e],
                         label=lab, ms=4)
            if e == "glowrt" and b == 16 and rr[0]["threads"] == 1:
                ax.plot(threads, [rr[0]["images_per_s"] * t for t in threads], ":", color=colors[e], lw=1,
                        label="glowrt batch 16, linear")
    for a_ in (ax, ax2):
        a_.set_xscale("log", base=2)
        a_.set_xticks(threads)
        a_.set_xticklabels([str(t) for t in threads])
        a_.set_xlabel("threads")
        a_.grid(alpha=0.3)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylabel("images / s (density, higher is better)")
    ax2.set_ylabel("parallel efficiency %")
    ax2.axhline(60, color="k", lw=0.8, ls=":")
    ax2.set_ylim(0, 110)
    ax.legend(fontsize=6)
    mi = state["env"]["machine"]
    fig.suptitle("%s, %s, %s CPUs, OMP_WAIT_POLICY=%s, %s" % (state["env"]["arch"], mi["model_name"], mi["cpus"],
                 state["wait"].upper(), state["env"]["commit"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(state, a, final=False):
    analyse(state)
    state["env"]["load_end"] = compare.loadavg()
    state["env"]["wall_s"] = time.time() - T0
    name = "scaling_%s" % a.arch
    jpath = os.path.join(a.out, name + ".json")
    with open(jpath + ".tmp", "w") as f:
        json.dump(dict(env=state["env"], rows=state["rows"], targets=state.get("targets"), failed=state["failed"],
                       prep=state["prep"], flops_per_image=state["flops"]), f, indent=1, default=str)
    os.replace(jpath + ".tmp", jpath)
    md = markdown(state)
    with open(os.path.join(a.out, name + ".md"), "w") as f:
        f.write(md)
    if final:
        try:
            chart(state, os.path.join(a.out, name + ".png"))
        except Exception as e:  # noqa: BLE001  (matplotlib missing or failing: the table is what matters)
            log("no chart: %s: %s" % (type(e).__name__, e))
    return md


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="cifar", choices=["cifar", "tiny"])
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--batches", default="16,1")
    ap.add_argument("--engines", default="glowrt,ort,torch,torch-precomp")
    ap.add_argument("--torch-threads", default="max", help="thread counts at which PyTorch runs in the main pass "
                    "('max' = the largest of --threads; 'all' = every one)")
    ap.add_argument("--extra", default="wait,sample,torch-scaling,profile",
                    help="optional steps after the main pass, each only while --budget allows: wait (glowrt and "
                    "PyTorch at the other OMP_WAIT_POLICY), sample (sampling, max threads, batch 16), "
                    "torch-scaling (the faster PyTorch variant at the other thread counts, batch 16), profile "
                    "(glowrt bench --profile)")
    ap.add_argument("--wait", default="spin", choices=["spin", "passive", "active"],
                    help="how glowrt's and PyTorch's OpenMP threads wait: spin = GOMP_SPINCOUNT=1000 "
                         "(glowrt's CLI and bench/compare's default), or that OMP_WAIT_POLICY")
    ap.add_argument("--bind", action="store_true", help="OMP_PROC_BIND=close OMP_PLACES=cores for glowrt, PyTorch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images-b1", type=int, default=4, help="images per repeat at batch 1")
    ap.add_argument("--budget", type=float, default=400, help="seconds from start after which optional steps "
                    "are skipped")
    ap.add_argument("--hard-limit", type=float, default=500, help="seconds from start after which nothing new "
                    "starts (each run is also killed at this limit)")
    ap.add_argument("--main-pass-s", type=float, default=170, help="seconds kept for the main pass: preparation "
                    "(the ONNX export above all) is killed at --hard-limit minus this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-check", action="store_true", help="let models/export.py run its float64 self-check")
    ap.add_argument("--job", choices=["onnx-density", "onnx-sample"], help=argparse.SUPPRESS)
    ap.add_argument("--force-onnx", action="store_true", help="export the ONNX graphs even when onnxruntime "
                    "does not import (to test the export)")
    ap.add_argument("--glowrt-exe", default="", help="compare_glowrt driver (bench/compare_glowrt.c)")
    ap.add_argument("--glowrt-cli", default="", help="the glowrt CLI (for --extra profile)")
    ap.add_argument("--ld-path", default="", help="LD_LIBRARY_PATH for the glowrt processes (unpacked oneDNN)")
    ap.add_argument("--build-info", default="", help="one line about the glowrt build, for the report")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "scaling-results"))
    ap.add_argument("--work", default=os.path.join(HERE, "out", "scaling"))
    ap.add_argument("--started", type=float, default=None, help="epoch seconds the whole job started (budgets "
                    "count from it)")
    a = ap.parse_args()
    if a.job:
        return export_job(a.job, a.work, a.arch)
    global T0
    if a.started:
        T0 = a.started
    arch = compare.ARCHS[a.arch]
    threads = sorted({int(t) for t in a.threads.split(",") if t})
    batches = [int(b) for b in a.batches.split(",") if b]
    engines = [e for e in a.engines.split(",") if e]
    extras = [x for x in a.extra.split(",") if x]
    for e in engines:
        if e not in ENGINES:
            ap.error("--engines: of %s" % ",".join(ENGINES))
    tmax = max(threads)
    torch_threads = (threads if a.torch_threads == "all" else [tmax] if a.torch_threads == "max"
                     else sorted({int(t) for t in a.torch_threads.split(",")}))
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(os.path.join(a.work, "no-opencl-vendors"), exist_ok=True)
    for f in os.listdir(a.work):  # outputs of an earlier run must not pass for this one's
        if f.startswith("out_"):
            os.remove(os.path.join(a.work, f))

    import torch
    state = dict(rows=[], failed={}, prep={}, engines=engines, wait=a.wait, tmax=tmax, size=arch["size"])
    log("machine")
    mi = machine_info(a.work)
    with open(os.path.join(a.out, "machine.txt"), "w") as f:
        f.write(mi["lscpu"])
    log("  %s, %s CPUs (%s threads/core), affinity %d, avx512f %s, amx_tile %s, %s GHz"
        % (mi["model_name"], mi["cpus"], mi["threads_per_core"], mi["affinity"], mi["flags"]["avx512f"],
           mi["flags"]["amx_tile"], fmt(mi["ghz"])))
    ort_version = None
    if "ort" in engines:
        r = subprocess.run([PY, "-c", "import onnxruntime as o; print(o.__version__, o.get_available_providers())"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            ort_version = r.stdout.strip()
            log("onnxruntime " + ort_version)
        else:
            state["failed"]["ort"] = "onnxruntime does not import in %s: %s" % (PY, (r.stderr.strip().splitlines()
                                                                                            or ["?"])[-1][-300:])
            log("SKIPPING ONNX Runtime: " + state["failed"]["ort"])
    if "glowrt" in engines and not (a.glowrt_exe and os.path.exists(a.glowrt_exe)):
        state["failed"]["glowrt"] = "no glowrt driver (build failed?): %r" % a.glowrt_exe
        log("SKIPPING glowrt: " + state["failed"]["glowrt"])
    mi_short = {k: v for k, v in mi.items() if k != "lscpu"}
    state["env"] = dict(arch=a.arch, arch_desc=arch["desc"], seed=a.seed, threads=threads, batches=batches,
                        repeats=a.repeats, machine=mi_short, date=datetime.datetime.utcnow().strftime(
                            "%Y-%m-%d %H:%M UTC"), commit=git_commit(), python=platform.python_version(),
                        torch=torch.__version__, numpy=np.__version__, ort=ort_version, wait=a.wait, bind=a.bind,
                        load_start=compare.loadavg(), build=a.build_info, argv=sys.argv[1:])
    state["flops"] = 0.0
    want_sample = "sample" in extras
    jobs = prepare(a, arch, a.work, state, want_sample)
    import compare_common as cc
    state["flops"] = cc.flops_per_image(state["info"], arch["size"], arch["size"])
    state["env"]["model"] = state["info"]

    def n_images(b):
        return b if b > 1 else a.images_b1
    n_max = max(max(n_images(b) for b in batches), 16)
    ns = types.SimpleNamespace(seed=a.seed, arch=a.arch)
    compare.WORK = a.work
    x, xs, data_src = compare.make_inputs(ns, dict(in_channels=state["info"]["in_channels"], size=arch["size"]), n_max)
    state["env"]["data"] = data_src
    t = time.time()
    try:
        ref_lp = reference_density(a.work, x)
        log("float64 reference on %d images: %.1f s (log_p %.1f .. %.1f nats)" % (len(x), time.time() - t,
                                                                                    ref_lp.min(), ref_lp.max()))
    except Exception as e:  # noqa: BLE001  (timings still come; every row then reads as disagreeing)
        ref_lp = None
        state["env"]["reference_error"] = "%s: %s" % (type(e).__name__, str(e)[:300])
        log("float64 reference FAILED: " + state["env"]["reference_error"])
    state["prep"]["reference_s"] = time.time() - t
    ref_x = None
    if want_sample:
        t = time.time()
        try:
            ref_x = reference_sampling(a.work, xs, arch["size"])
            log("float64 encode + decode of %d other images (sampling reference): %.1f s" % (len(xs), time.time() - t))
        except Exception as e:  # noqa: BLE001
            log("sampling reference failed: %s: %s" % (type(e).__name__, e))
            state["env"]["sample_error"] = "%s: %s" % (type(e).__name__, str(e)[:300])
        state["prep"]["reference_sampling_s"] = time.time() - t
    log("waiting for %s" % ", ".join(j["name"] for j in jobs))
    wait_jobs(jobs, state, a.hard_limit - a.main_pass_s)
    write(state, a)

    def left(limit):
        return limit - (time.time() - T0)

    def go(e, mode, b, t, wait=None, reps=None, ref=ref_lp, optional=False):
        if e in state["failed"] or e not in engines:
            return None
        if mode == "sample" and e == "ort" and "sample_failed_ort" in state:
            return None
        if left(a.hard_limit) < 5 or (optional and left(a.budget) < 0):
            log("skipped (time): %s %s b=%d t=%d" % (e, mode, b, t))
            state.setdefault("skipped", []).append("%s/%s/b%d/t%d" % (e, mode, b, t))
            state["env"]["skipped"] = state["skipped"]
            return None
        reps = reps or (max(2, a.repeats - 1) if t == 1 else a.repeats)
        row = run_one(a, state, e, mode, b, t, n_images(b), reps, a.work, ref, wait or a.wait, left(a.hard_limit))
        if row.get("isa"):
            state["env"]["glowrt_isa"] = row["isa"]
        state["rows"].append(row)
        write(state, a)
        return row

    # main pass: density, every thread count (the largest first: the targets are read there; then 1, 2, ...),
    # engines interleaved
    order = [tmax] + [t for t in threads if t != tmax]
    log("main pass: density, threads %s, batches %s, OMP_WAIT_POLICY=%s" % (order, batches, a.wait.upper()))
    for t in order:
        for b in batches:
            for e in ("glowrt", "ort", "torch", "torch-precomp"):
                if e.startswith("torch") and t not in torch_threads:
                    continue
                go(e, "density", b, t)
    other = "active" if a.wait != "active" else "spin"
    if "wait" in extras:
        log("extra: OMP_WAIT_POLICY=%s at %d threads" % (other.upper(), tmax))
        for b in batches:
            for e in ("glowrt", "torch"):
                go(e, "density", b, tmax, wait=other, optional=True)
    if want_sample and ref_x is not None and left(a.budget) > 0:
        log("extra: sampling at %d threads, batch 16" % tmax)
        for e in ("glowrt", "ort", "torch", "torch-precomp"):
            go(e, "sample", 16, tmax, ref=ref_x, optional=True)
    if "torch-scaling" in extras and len(threads) > 1:
        cand = [r for r in state["rows"] if "error" not in r and r["engine"].startswith("torch") and
                r["mode"] == "density" and r["batch"] == 16 and r["threads"] == tmax and r["wait"] == a.wait]
        if cand:
            e = min(cand, key=lambda r: r["ms_per_image"])["engine"]
            log("extra: %s at the other thread counts, batch 16" % e)
            for t in threads:
                if t not in torch_threads and left(a.budget) > 0:
                    go(e, "density", 16, t, optional=True)
    if "profile" in extras and a.glowrt_cli and os.path.exists(a.glowrt_cli) and "glowrt" not in state["failed"] \
            and left(a.budget) > 0:
        log("extra: glowrt bench --profile, %d threads, batch 16" % tmax)
        env = dict(os.environ, OMP_WAIT_POLICY=a.wait.upper(), OCL_ICD_VENDORS=os.path.join(a.work,
                                                                                             "no-opencl-vendors"))
        if a.ld_path:
            env["LD_LIBRARY_PATH"] = a.ld_path + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")
        try:
            p = subprocess.run([a.glowrt_cli, "bench", os.path.join(a.work, "model.glow"), "--threads", str(tmax),
                                "--batch", "16", "--repeats", "3", "--profile"], capture_output=True, text=True,
                               env=env, timeout=max(5, min(90, left(a.hard_limit))))
            with open(os.path.join(a.out, "profile.txt"), "w") as f:
                f.write(p.stdout + p.stderr)
        except subprocess.TimeoutExpired:
            log("  profile timed out")
    md = write(state, a, final=True)
    print(md, flush=True)
    for k, v in state["targets"].items():
        log("target %-12s %s: %s -> %s" % (k, v["target"], v["value"], "met" if v["met"] else "NOT met"))
    effs = ["%s b%d t%d %.0f%%" % (r["engine"], r["batch"], r["threads"], 100 * r["efficiency"])
            for r in state["rows"] if "efficiency" in r and r["threads"] > 1 and r["mode"] == "density"]
    log("parallel efficiency: " + ", ".join(effs))
    log("machine: %s, %s CPUs, avx512f %s, amx %s" % (mi["model_name"], mi["cpus"], mi["flags"]["avx512f"],
                                                       mi["flags"]["amx_tile"]))
    bad = [r for r in state["rows"] if "error" in r or not r.get("agree", True)]
    log("wrote %s (%d rows, %d failed or disagreeing, %d engines skipped)"
        % (a.out, len(state["rows"]), len(bad), len(state["failed"])))
    return 1 if bad or state["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
