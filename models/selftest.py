"""Self-test of the Python side (no C runtime needed):

    /usr/bin/python3 models/selftest.py

CRC32C check value; glow.py encode/decode round trip; export + .glow reader +
float64 plan executor against glow.py in float64 (log_p, eps, decode) for a few
configurations; the exporter's refusals; corruption detection of the reader.
Prints 'N passed, N failed', exit 1 on failure.
"""
import json
import os
import stat
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export  # noqa: E402
import glowfile  # noqa: E402
from glow import Glow, random_model  # noqa: E402

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(ok)
    print("%s %s %s" % ("ok  " if ok else "FAIL", name, detail), flush=True)


def export_quiet(args):
    devnull = open(os.devnull, "w")
    old = sys.stderr
    sys.stderr = devnull
    try:
        return export.main(args)
    finally:
        sys.stderr = old
        devnull.close()


def main():
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="glowrt-selftest-")
    check("crc32c check value", glowfile.crc32c(b"123456789") == 0xE3069283)
    data = np.random.default_rng(1).integers(0, 256, 300001, dtype=np.uint8).tobytes()
    check("crc32c fast path == bytewise", glowfile.crc32c(data) ==
          glowfile._crc_loop(0xFFFFFFFF, data) ^ 0xFFFFFFFF)

    configs = [(1, 2, 2, True, True, 16, 8, 8), (3, 2, 3, False, False, 16, 16, 8),
               (3, 1, 1, True, False, 8, 4, 4), (1, 3, 2, False, True, 8, 8, 16)]
    for k, (c, K, L, aff, lu, hid, H, W) in enumerate(configs):
        tag = "C=%d K=%d L=%d %s %s %dx%d" % (c, K, L, "affine" if aff else "additive",
                                              "lu" if lu else "plain", H, W)
        m = random_model(c, K, L, affine=aff, conv_lu=lu, hidden=hid, height=H, width=W, seed=k)
        sd = m.state_dict()
        if k == 1:
            sd = {"module." + a: b for a, b in sd.items()}
        pt, gl = os.path.join(tmp, "m%d.pt" % k), os.path.join(tmp, "m%d.glow" % k)
        torch.save(sd, pt)
        rc = export_quiet(["rosinality", pt, "-o", gl, "--image-size", "%dx%d" % (H, W), "--n-bits", "8", "-q"])
        check("export " + tag, rc == 0)
        if rc:
            continue
        g = glowfile.read_glow(gl)
        want_inv = "lu" if lu or L == 1 else "mixed"
        check("metadata " + tag, g.kv["glow.invconv"] == want_inv and g.kv["glow.n_flow"] == K and
              g.kv["glow.coupling"] == ("affine" if aff else "additive") and g.kv["glow.hidden"] == hid)
        md = m.double()
        x = torch.rand(3, c, H, W, dtype=torch.float64) - 0.5
        with torch.no_grad():
            ref_ll, ref_eps = md.log_prob(x), md.encode(x)
            rt = (md.decode(ref_eps, H, W) - x).abs().max().item()
            plan = glowfile.Plan(g)
            ll, eps = plan.forward(x)
            xr = plan.reverse(eps, H, W)
        d_ll = (ll - ref_ll).abs().max().item()
        d_eps = (eps - ref_eps).abs().max().item()
        d_rt = (xr - x).abs().max().item()
        check("glow.py roundtrip " + tag, rt < 1e-10, "%.2g" % rt)
        check("plan vs glow.py " + tag, d_ll < 1e-6 * ref_ll.abs().max().item() + 1e-4 and d_eps < 1e-5 and d_rt < 1e-5,
              "dlog_p %.2g deps %.2g droundtrip %.2g" % (d_ll, d_eps, d_rt))

    # refusals (exit 2)
    m = random_model(1, 1, 2, hidden=8, height=8, width=8)
    sd = dict(m.state_dict())
    out = os.path.join(tmp, "bad.glow")

    def refused(name, sd_bad, size="8"):
        p = os.path.join(tmp, "bad.pt")
        torch.save(sd_bad, p)
        if os.path.exists(out):
            os.remove(out)
        check("refuses " + name, export_quiet(["rosinality", p, "-o", out, "--image-size", size, "--n-bits", "8",
                                               "-q"]) == 2
              and not os.path.exists(out))

    refused("uninitialised actnorm", Glow(1, 1, 2, hidden=8).state_dict())
    refused("image size", sd, "6")
    refused("image size HxW", sd, "8x10")
    refused("unexpected key", dict(sd, **{"blocks.0.extra": torch.zeros(1)}))
    sd2 = dict(sd)
    del sd2["blocks.1.prior.scale"]
    refused("missing key", sd2)
    refused("inconsistent shape", dict(sd, **{"blocks.0.flows.0.coupling.net.0.bias": torch.zeros(7)}))
    # a singular folded 1x1 conv: exp(w_s) underflows to 0 (numpy's inv raised LinAlgError)
    refused("singular LU 1x1 conv", dict(sd, **{"blocks.0.flows.0.invconv.w_s": torch.full((4,), -1000.0)}))
    # an LU 1x1 conv whose log-det sum(w_s) does not hold: w_p not a permutation, s_sign not +-1
    q = "blocks.0.flows.0.invconv."
    refused("LU w_p not a permutation", dict(sd, **{q + "w_p": 2 * sd[q + "w_p"]}))
    refused("LU s_sign not +-1", dict(sd, **{q + "s_sign": 0.5 * sd[q + "s_sign"]}))
    # stored masks that are not upstream's constant buffers: det W would not be exp(sum w_s)
    refused("LU l_mask not the strict lower triangle", dict(sd, **{q + "l_mask": torch.ones_like(sd[q + "l_mask"])}))
    refused("LU u_mask not the strict upper triangle", dict(sd, **{q + "u_mask": sd[q + "l_mask"]}))
    refused("LU l_eye not the identity", dict(sd, **{q + "l_eye": 2 * sd[q + "l_eye"]}))
    import glow_y0ast
    y0 = dict(glow_y0ast.random_model(1, 8, 1, 2, seed=1).state_dict())
    y0["flow.layers.1.actnorm.logs"] = torch.full_like(y0["flow.layers.1.actnorm.logs"], -800.0)  # exp: 0
    p = os.path.join(tmp, "y0.pt")
    torch.save(y0, p)
    check("refuses a y0ast singular 1x1 step", export_quiet(["y0ast", p, "-o", out, "--image-size", "8", "--n-bits",
                                                            "8", "-q"]) == 2 and not os.path.exists(out))

    # files that are not checkpoints, and an output that cannot be written: exit 2, no traceback
    good_pt = os.path.join(tmp, "good.pt")
    torch.save(sd, good_pt)
    raw_pt = open(good_pt, "rb").read()
    for name, content in (("garbage", b"garbage\n"), ("truncated", raw_pt[:len(raw_pt) // 2]), ("empty", b"")):
        p = os.path.join(tmp, "junk.pt")
        open(p, "wb").write(content)
        check("refuses a %s checkpoint file" % name,
              export_quiet(["rosinality", p, "-o", out, "--image-size", "8", "--n-bits", "8", "-q"]) == 2
              and not os.path.exists(out))
    check("refuses a missing checkpoint",
          export_quiet(["rosinality", os.path.join(tmp, "none.pt"), "-o", out, "--image-size", "8", "--n-bits", "8",
                        "-q"]) == 2)
    check("refuses an output it cannot write",
          export_quiet(["rosinality", good_pt, "-o", os.path.join(tmp, "no", "dir", "m.glow"), "--image-size", "8",
                        "--n-bits", "8", "-q"]) == 2)

    # an output that is a pipe (or a device) is refused, not replaced by the rename; a link is written through
    fifo = os.path.join(tmp, "fifo.glow")
    os.mkfifo(fifo)
    check("refuses an output that is a pipe, and leaves it",
          export_quiet(["rosinality", good_pt, "-o", fifo, "--image-size", "8", "--n-bits", "8", "-q"]) == 2 and
          stat.S_ISFIFO(os.lstat(fifo).st_mode))
    target, link = os.path.join(tmp, "target.glow"), os.path.join(tmp, "link.glow")
    os.symlink(target, link)
    rc = export_quiet(["rosinality", good_pt, "-o", link, "--image-size", "8", "--n-bits", "8", "-q"])
    check("writes through a link to the output", rc == 0 and os.path.islink(link) and os.path.isfile(target))

    # n_bits: required (a state_dict does not record it) unless train.py's progress.json says it
    nb = os.path.join(tmp, "nbits")
    os.makedirs(nb, exist_ok=True)
    p, out_nb = os.path.join(nb, "model_0000001.pt"), os.path.join(nb, "m.glow")
    torch.save(sd, p)
    check("refuses a checkpoint without --n-bits",
          export_quiet(["rosinality", p, "-o", out_nb, "--image-size", "8", "-q"]) == 2 and not os.path.exists(out_nb))
    with open(os.path.join(nb, "progress.json"), "w") as f:
        json.dump({"config": {"n_bits": 5}}, f)
    rc = export_quiet(["rosinality", p, "-o", out_nb, "--image-size", "8", "-q"])
    check("n_bits from progress.json", rc == 0 and glowfile.read_glow(out_nb).kv["glow.n_bits"] == 5)
    os.remove(out_nb)
    check("refuses --n-bits that contradicts progress.json",
          export_quiet(["rosinality", p, "-o", out_nb, "--image-size", "8", "--n-bits", "8", "-q"]) == 2
          and not os.path.exists(out_nb))

    # corruption is detected
    good = os.path.join(tmp, "m0.glow")
    raw = bytearray(open(good, "rb").read())
    for name, pos in (("header byte", 20), ("metadata byte", 140), ("data byte", len(raw) - 5)):
        b = bytearray(raw)
        b[pos] ^= 0x01
        p = os.path.join(tmp, "corrupt.glow")
        open(p, "wb").write(b)
        try:
            glowfile.read_glow(p)
            check("detects corrupt " + name, False)
        except glowfile.GlowFileError as e:
            check("detects corrupt " + name, True, "(%s)" % e)
    p = os.path.join(tmp, "trunc.glow")
    open(p, "wb").write(raw[:-1])
    try:
        glowfile.read_glow(p)
        check("detects truncation", False)
    except glowfile.GlowFileError:
        check("detects truncation", True)

    subprocess.run(["rm", "-rf", tmp])
    n_fail = RESULTS.count(False)
    print("%d passed, %d failed" % (len(RESULTS) - n_fail, n_fail))
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
