"""Read, write and run .glow files (docs/format.md, version 1.0) in Python.

    from glowfile import read_glow, write_glow, crc32c, Plan
    g = read_glow("model.glow")          # validates header, CRCs, plan counts
    g.kv, g.tensors (name -> np.float32 array), g.ops (list of Op)
    p = Plan(g)                          # a float64 reference executor (torch)
    log_p, eps = p.forward(x)            # x [N, C, H, W] model space
    x = p.reverse(eps, H, W)

Used by models/export.py (self-check) and by the tests. Pure Python + numpy
(+ torch for Plan).
"""
import math
import os
import errno
import functools
import struct
import sys

import numpy as np

MAGIC = b"GLOWRT\n\0"
VERSION_MAJOR, VERSION_MINOR = 1, 0
BYTE_ORDER = 0x01020304
HEADER_SIZE = 128

OP_SQUEEZE, OP_AFFINE, OP_COUPLING, OP_SPLIT, OP_TOP_PRIOR = 1, 2, 3, 4, 5
OP_NAMES = {1: "SQUEEZE", 2: "AFFINE", 3: "COUPLING", 4: "SPLIT", 5: "TOP_PRIOR"}
# op -> (n_int, n_f64, n_tensor)
OP_COUNTS = {1: (1, 0, 0), 2: (1, 1, 4), 3: (4, 0, 8), 4: (2, 0, 3), 5: (3, 0, 2)}
# tensor slots that may be -1 (absent)
OP_OPTIONAL = {1: (), 2: (), 3: (2, 7), 4: (2,), 5: (0, 1)}
KV_I64, KV_F64, KV_STR = 1, 2, 3


class GlowFileError(Exception):
    pass


# ---- CRC32C (Castagnoli, reflected poly 0x82F63B78) ----------------------
_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (_POLY if _c & 1 else 0)
    _TABLE.append(_c)
MIN_STEPS = 16        # the lane count is the power of two giving each lane >= this many words
MIN_LANES = 16        # fewer lanes than this (under 1 KiB): the plain byte loop
MAX_LANES = 1 << 14   # 16384 lanes of 4 bytes: 64 KiB per numpy step


def _crc_loop(reg, data):
    """The raw register (no init / final xor) updated byte by byte: the reference."""
    t = _TABLE
    for b in bytes(data):
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _apply(m, x):
    """A 32x32 GF(2) matrix (list of 32 column ints) times the 32-bit vector x."""
    r, i = 0, 0
    while x:
        if x & 1:
            r ^= m[i]
        x >>= 1
        i += 1
    return r


def _zeros_op(n):
    """Matrix advancing a raw register over n zero bytes (by squaring)."""
    base = [_crc_loop(1 << i, b"\0") for i in range(32)]
    result = [1 << i for i in range(32)]
    while n:
        if n & 1:
            result = [_apply(base, c) for c in result]
        base = [_apply(base, c) for c in base]
        n >>= 1
    return result


@functools.lru_cache(maxsize=None)
def _zeros_tables(n):
    """_zeros_op(n) as two 65536-entry tables, for a register's low and high 16 bits
    (cached: only powers of two up to 4 * MAX_LANES are asked for)."""
    m = _zeros_op(n)
    lo, hi = np.zeros(65536, np.uint32), np.zeros(65536, np.uint32)
    for b in range(16):
        lo[1 << b:2 << b] = lo[:1 << b] ^ np.uint32(m[b])
        hi[1 << b:2 << b] = hi[:1 << b] ^ np.uint32(m[b + 16])
    return lo, hi


def _advance(regs, n):
    """Raw registers (a uint32 array) advanced over n zero bytes each."""
    lo, hi = _zeros_tables(n)
    return lo[regs & 0xFFFF] ^ hi[regs >> 16]


def _crc_raw(reg, data):
    """Raw register over data, fast: lane k takes 32-bit words k, k+L, k+2L, ...
    All lanes step in lockstep (xor in the word, then advance over the 4L bytes
    up to the lane's next word: one table lookup pair per step, as CRC is linear
    in the register), so the data is read in place, without a transpose. The
    init value rides in lane 0's register; the last row advances only 4 bytes,
    which leaves lane k 4(L-1-k) bytes short of the end, made up pairwise
    (shift even lanes by 4, 8, 16, ... bytes and xor). The tail recurses."""
    mv = memoryview(data).cast("B")
    lanes = min(MAX_LANES, 1 << max(0, (len(mv) // (4 * MIN_STEPS)).bit_length() - 1))
    if lanes < MIN_LANES:
        return _crc_loop(reg, mv)
    steps = len(mv) // (4 * lanes)
    words = np.frombuffer(mv, "<u4", count=steps * lanes).reshape(steps, lanes)
    r = np.zeros(lanes, np.uint32)
    r[0] = reg
    lo, hi = _zeros_tables(4 * lanes)
    for row in words[:-1]:
        x = r ^ row
        r = lo[x & 0xFFFF] ^ hi[x >> 16]
    r = _advance(r ^ words[-1], 4)
    width = 4
    while len(r) > 1:
        r = _advance(r[0::2], width) ^ r[1::2]
        width *= 2
    return _crc_raw(int(r[0]), mv[4 * steps * lanes:])


def crc32c(data, crc=0):
    """CRC-32C of a bytes-like object (about 1 GB/s on large buffers); crc
    continues a previous CRC value."""
    return _crc_raw(crc ^ 0xFFFFFFFF, data) ^ 0xFFFFFFFF


# ---- writer ------------------------------------------------------------------
def _pack_str(s):
    b = s.encode("utf-8")
    if not 1 <= len(b) <= 1024:
        raise GlowFileError("string length %d out of 1..1024: %r" % (len(b), s))
    return struct.pack("<H", len(b)) + b


def output_target(path):
    """The file write_glow writes for path. It writes beside it and renames over it, so a
    link is written through (its target replaced, not the link), and an existing output
    that is not a regular file (a device, a pipe, a directory) is refused: OSError."""
    if os.path.islink(path):
        path = os.path.realpath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise OSError(errno.EEXIST, "exists and is not a regular file (a device, a pipe or a directory): the "
                      "output is written beside it and renamed over it", path)
    return path


def write_glow(path, kv, tensors, ops, alignment=64):
    """kv: list of (key, value) (int -> i64, float -> f64, str -> string);
    tensors: list of (name, array) (stored as float32, C order);
    ops: list of (code, ints, f64s, tensor_names) with None for absent tensors."""
    if alignment < 64 or alignment & (alignment - 1):
        raise GlowFileError("alignment must be a power of two >= 64")
    meta = bytearray()
    keys = set()
    for k, v in kv:
        if k in keys:
            raise GlowFileError("duplicate key " + k)
        keys.add(k)
        meta += _pack_str(k)
        if isinstance(v, bool):
            raise GlowFileError("bool value for " + k)
        if isinstance(v, (int, np.integer)):
            meta += struct.pack("<Bq", KV_I64, int(v))
        elif isinstance(v, (float, np.floating)):
            meta += struct.pack("<Bd", KV_F64, float(v))
        elif isinstance(v, str):
            meta += struct.pack("<B", KV_STR) + _pack_str(v)
        else:
            raise GlowFileError("bad value type for %s: %r" % (k, type(v)))
    index = {}
    blobs = []
    off = 0
    for name, arr in tensors:
        if name in index:
            raise GlowFileError("duplicate tensor " + name)
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
        if not 1 <= a.ndim <= 4 or min(a.shape) < 1:
            raise GlowFileError("tensor %s: bad shape %s" % (name, a.shape))
        index[name] = len(blobs)
        b = a.tobytes()
        meta += _pack_str(name) + struct.pack("<BB", 0, a.ndim)
        meta += struct.pack("<%dQ" % a.ndim, *a.shape)
        meta += struct.pack("<QQI", off, len(b), crc32c(b))
        blobs.append((off, b))
        off += (len(b) + alignment - 1) // alignment * alignment
    for code, ints, f64s, tnames in ops:
        ni, nf, nt = OP_COUNTS[code]
        if (len(ints), len(f64s), len(tnames)) != (ni, nf, nt):
            raise GlowFileError("op %s: wrong counts" % OP_NAMES[code])
        meta += struct.pack("<HHHH", code, ni, nf, nt)
        meta += struct.pack("<%dq" % ni, *[int(i) for i in ints])
        meta += struct.pack("<%dd" % nf, *[float(f) for f in f64s])
        meta += struct.pack("<%di" % nt, *[-1 if t is None else index[t] for t in tnames])
    meta_size = len(meta)
    data_offset = (HEADER_SIZE + meta_size + alignment - 1) // alignment * alignment
    data_size = off if blobs else 0
    if blobs:
        data_size = blobs[-1][0] + len(blobs[-1][1])
    file_size = data_offset + data_size
    hdr = bytearray(HEADER_SIZE)
    struct.pack_into("<8sHHIQIIIIQQQQ", hdr, 0, MAGIC, VERSION_MAJOR, VERSION_MINOR, BYTE_ORDER,
                     file_size, alignment, len(kv), len(tensors), len(ops),
                     HEADER_SIZE, meta_size, data_offset, data_size)
    crc = crc32c(bytes(meta), crc32c(bytes(hdr[:124])))
    struct.pack_into("<I", hdr, 124, crc)
    path = output_target(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(hdr)
        f.write(meta)
        f.write(b"\0" * (data_offset - HEADER_SIZE - meta_size))
        pos = 0
        for o, b in blobs:
            f.write(b"\0" * (o - pos))
            f.write(b)
            pos = o + len(b)
        assert f.tell() == file_size
    os.replace(tmp, path)
    return file_size


# ---- reader --------------------------------------------------------------------
class Op:
    def __init__(self, code, ints, f64s, tensors):
        self.code, self.ints, self.f64s, self.tensors = code, ints, f64s, tensors

    @property
    def name(self):
        return OP_NAMES[self.code]

    def __repr__(self):
        return "%s(ints=%s, f64s=%s, tensors=%s)" % (self.name, self.ints, self.f64s, self.tensors)


class GlowFile:
    pass


class _Cursor:
    def __init__(self, buf, start, end):
        self.buf, self.pos, self.end = buf, start, end

    def take(self, n):
        if n < 0 or self.pos + n > self.end:
            raise GlowFileError("metadata section truncated at byte %d" % self.pos)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self):
        (n,) = self.unpack("<H")
        if not 1 <= n <= 1024:
            raise GlowFileError("string length %d out of range" % n)
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise GlowFileError("string is not UTF-8")


def read_glow(path, verify=True):
    """Parse and validate a .glow file. verify: also check every tensor's CRC."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < HEADER_SIZE:
        raise GlowFileError("file shorter than the header")
    (magic, vmaj, vmin, bom, file_size, alignment, n_kv, n_tensors, n_ops, meta_offset,
     meta_size, data_offset, data_size) = struct.unpack_from("<8sHHIQIIIIQQQQ", buf, 0)
    if magic != MAGIC:
        raise GlowFileError("bad magic")
    if vmaj != VERSION_MAJOR:
        raise GlowFileError("unsupported major version %d" % vmaj)
    if bom != BYTE_ORDER:
        raise GlowFileError("bad byte-order mark")
    if file_size != len(buf):
        raise GlowFileError("file_size %d != real size %d" % (file_size, len(buf)))
    if alignment < 64 or alignment & (alignment - 1):
        raise GlowFileError("bad alignment %d" % alignment)
    if meta_offset != HEADER_SIZE:
        raise GlowFileError("meta_offset must be 128")
    if meta_offset + meta_size > len(buf) or data_offset % alignment or \
            data_offset < meta_offset + meta_size or data_offset > len(buf) or \
            data_size != file_size - data_offset:
        raise GlowFileError("bad section offsets/sizes")
    if any(buf[72:124]):
        raise GlowFileError("reserved header bytes are not zero")
    (hcrc,) = struct.unpack_from("<I", buf, 124)
    if crc32c(buf[meta_offset:meta_offset + meta_size], crc32c(buf[:124])) != hcrc:
        raise GlowFileError("header CRC mismatch")
    cur = _Cursor(buf, meta_offset, meta_offset + meta_size)
    g = GlowFile()
    g.path, g.version = path, (vmaj, vmin)
    g.alignment, g.file_size, g.data_offset = alignment, file_size, data_offset
    g.kv = {}
    for _ in range(n_kv):
        k = cur.string()
        if k in g.kv:
            raise GlowFileError("duplicate key " + k)
        (t,) = cur.unpack("<B")
        if t == KV_I64:
            (v,) = cur.unpack("<q")
        elif t == KV_F64:
            (v,) = cur.unpack("<d")
        elif t == KV_STR:
            v = cur.string()
        else:
            raise GlowFileError("bad kv type %d for %s" % (t, k))
        g.kv[k] = v
    g.tensor_names, g.tensors, g.tensor_info = [], {}, []
    spans = []
    for _ in range(n_tensors):
        name = cur.string()
        if name in g.tensors:
            raise GlowFileError("duplicate tensor " + name)
        dtype, ndim = cur.unpack("<BB")
        if dtype != 0:
            raise GlowFileError("tensor %s: unknown dtype %d" % (name, dtype))
        if not 1 <= ndim <= 4:
            raise GlowFileError("tensor %s: ndim %d" % (name, ndim))
        dims = cur.unpack("<%dQ" % ndim)
        off, nbytes, crc = cur.unpack("<QQI")
        if min(dims) < 1 or nbytes != 4 * int(np.prod(dims)):
            raise GlowFileError("tensor %s: bad dims/nbytes" % name)
        if off % alignment or off + nbytes > data_size:
            raise GlowFileError("tensor %s: outside the data section or misaligned" % name)
        raw = buf[data_offset + off:data_offset + off + nbytes]
        if verify and crc32c(raw) != crc:
            raise GlowFileError("tensor %s: CRC mismatch" % name)
        spans.append((off, off + nbytes, name))
        g.tensor_names.append(name)
        g.tensor_info.append((name, dims, off, nbytes, crc))
        g.tensors[name] = np.frombuffer(raw, dtype="<f4").reshape(dims)
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise GlowFileError("tensors %s and %s overlap" % (a[2], b[2]))
    g.ops = []
    for _ in range(n_ops):
        code, ni, nf, nt = cur.unpack("<HHHH")
        if code not in OP_COUNTS:
            raise GlowFileError("unknown op %d" % code)
        if (ni, nf, nt) != OP_COUNTS[code]:
            raise GlowFileError("op %s: wrong counts" % OP_NAMES[code])
        ints = list(cur.unpack("<%dq" % ni))
        f64s = list(cur.unpack("<%dd" % nf))
        tids = list(cur.unpack("<%di" % nt))
        names = []
        for slot, t in enumerate(tids):
            if t == -1:
                if slot not in OP_OPTIONAL[code]:
                    raise GlowFileError("op %s: tensor slot %d may not be absent" % (OP_NAMES[code], slot))
                names.append(None)
            elif 0 <= t < n_tensors:
                names.append(g.tensor_names[t])
            else:
                raise GlowFileError("op %s: tensor index %d out of range" % (OP_NAMES[code], t))
        g.ops.append(Op(code, ints, f64s, names))
    if cur.pos != cur.end:
        raise GlowFileError("metadata section has %d trailing bytes" % (cur.end - cur.pos))
    tops = [i for i, op in enumerate(g.ops) if op.code == OP_TOP_PRIOR]
    if tops != [len(g.ops) - 1]:
        raise GlowFileError("exactly one TOP_PRIOR, as the last op, is required")
    for k in ("glow.in_channels", "glow.image_height", "glow.image_width", "glow.n_bits"):
        if not isinstance(g.kv.get(k), int):
            raise GlowFileError("missing i64 key " + k)
    check_plan(g)
    return g


def check_plan(g):
    """Channel counts and tensor shapes consistent along the plan."""
    c = g.kv["glow.in_channels"]
    h, w = g.kv["glow.image_height"], g.kv["glow.image_width"]
    if c < 1 or h < 1 or w < 1 or not 1 <= g.kv["glow.n_bits"] <= 8:
        raise GlowFileError("bad glow.in_channels / image size / n_bits")
    shape = lambda n: None if n is None else tuple(g.tensors[n].shape)  # noqa: E731
    for k, op in enumerate(g.ops):
        where = "op %d (%s)" % (k, op.name)
        if op.ints[0] != c:
            raise GlowFileError("%s: expects C=%d, plan has C=%d" % (where, op.ints[0], c))
        t = [shape(n) for n in op.tensors]
        if op.code == OP_SQUEEZE:
            if h % 2 or w % 2:
                raise GlowFileError("%s: odd image size %dx%d" % (where, h, w))
            c, h, w = 4 * c, h // 2, w // 2
            continue
        if op.code == OP_AFFINE:
            want = [(c, c), (c,), (c, c), (c,)]
        elif op.code == OP_COUPLING:
            hid, kind, halves = op.ints[1:4]
            if c % 2 or hid < 1 or kind not in (0, 1) or halves not in (0, 1):
                raise GlowFileError("%s: bad ints %s" % (where, op.ints))
            co = c if kind == 0 else c // 2
            want = [(hid, c // 2, 3, 3), (hid,), (9, hid), (hid, hid, 1, 1), (hid,),
                    (co, hid, 3, 3), (co,), (9, co)]
        elif op.code == OP_SPLIT:
            if c % 2 or op.ints[1] not in (0, 1):
                raise GlowFileError("%s: bad ints %s" % (where, op.ints))
            want = [(c, c // 2, 3, 3), (c,), (9, c)]
        else:  # TOP_PRIOR
            if op.ints[1] not in (0, 1) or op.ints[2] not in (0, 1):
                raise GlowFileError("%s: bad ints %s" % (where, op.ints))
            if op.ints[2] == 1 and None in t:
                raise GlowFileError("%s: learned prior without tensors" % where)
            if op.ints[2] == 0 and t != [None, None]:
                raise GlowFileError("%s: unlearned prior with tensors" % where)
            want = [(2 * c,), (9, 2 * c)]
        for slot, (have, exp) in enumerate(zip(t, want)):
            if have is not None and have != exp:
                raise GlowFileError("%s: tensor %d (%s) has shape %s, expected %s"
                                    % (where, slot, op.tensors[slot], have, exp))
        if op.code == OP_SPLIT:
            c //= 2


# ---- reference executor (float64, torch) ------------------------------------------
def edge_mask(h, w):
    """[9, h, w]: 1 where tap (ky, kx) of a 3x3 window at (h, w) reads outside."""
    m = np.zeros((9, h, w))
    for ky in range(3):
        for kx in range(3):
            rows = np.array([not 0 <= i + ky - 1 < h for i in range(h)])
            cols = np.array([not 0 <= j + kx - 1 < w for j in range(w)])
            m[3 * ky + kx] = (rows[:, None] | cols[None, :]).astype(float)
    return m


class Plan:
    """Runs a .glow plan in float64 with torch (zero-padded convs + edge tables).
    A reference for checking exports; not fast."""

    def __init__(self, g):
        import torch
        self.torch = torch
        self.g = g
        self.t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in g.tensors.items()}
        self.c_in = g.kv["glow.in_channels"]

    def _conv(self, x, w, b, e):
        F = self.torch.nn.functional
        w, b = self.t[w], self.t[b]
        y = F.conv2d(x, w, b, padding=w.shape[-1] // 2)
        if e is not None:
            m = self.torch.from_numpy(edge_mask(x.shape[2], x.shape[3]))
            y = y + self.torch.einsum("thw,to->ohw", m, self.t[e]).unsqueeze(0)
        return y

    def _coupling_h(self, op, xa):
        relu = self.torch.relu
        n = op.tensors
        h = relu(self._conv(xa, n[0], n[1], n[2]))
        h = relu(self._conv(h, n[3], n[4], None))
        return self._conv(h, n[5], n[6], n[7])

    @staticmethod
    def _halves(p, halves):
        c = p.shape[1] // 2
        if halves == 0:
            return p[:, :c], p[:, c:]
        return p[:, 0::2], p[:, 1::2]

    @classmethod
    def _split_st(cls, hh, halves):
        """(raw_s, t) of an affine coupling's network output."""
        first, second = cls._halves(hh, halves)
        return (first, second) if halves == 0 else (second, first)

    def _prior(self, op, z1):
        if op.code == OP_SPLIT:
            p = self._conv(z1, *op.tensors)
        else:
            n, c, h, w = z1.shape
            if op.ints[2] == 0:
                z = self.torch.zeros(n, c, h, w, dtype=self.torch.float64)
                return z, z
            m = self.torch.from_numpy(edge_mask(h, w))
            p = self.t[op.tensors[0]].view(-1, 1, 1) + self.torch.einsum("thw,to->ohw", m, self.t[op.tensors[1]])
            p = p.unsqueeze(0).expand(n, -1, -1, -1)
        return self._halves(p, op.ints[1])

    def forward(self, x):
        """x [N, C, H, W] -> (log_p + logdet [N], eps [N, D]) in float64."""
        torch = self.torch
        x = torch.as_tensor(x, dtype=torch.float64)
        n = x.shape[0]
        ll = torch.zeros(n, dtype=torch.float64)
        eps = []
        for op in self.g.ops:
            c, h, w = x.shape[1:]
            if op.ints[0] != c:
                raise GlowFileError("%s expects C=%d, have %d" % (op.name, op.ints[0], c))
            if op.code == OP_SQUEEZE:
                x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
            elif op.code == OP_AFFINE:
                x = torch.einsum("oc,nchw->nohw", self.t[op.tensors[0]], x) + self.t[op.tensors[1]].view(1, -1, 1, 1)
                ll = ll + h * w * op.f64s[0]
            elif op.code == OP_COUPLING:
                xa, xb = x[:, :c // 2], x[:, c // 2:]
                hh = self._coupling_h(op, xa)
                if op.ints[2] == 0:
                    raw_s, t_ = self._split_st(hh, op.ints[3])
                    s = torch.sigmoid(raw_s)
                    xb = (xb + t_) * s
                    ll = ll + torch.log(s).reshape(n, -1).sum(1)
                else:
                    xb = xb + hh
                x = torch.cat([xa, xb], 1)
            elif op.code == OP_SPLIT:
                z1, z2 = x[:, :c // 2], x[:, c // 2:]
                mean, log_sd = self._prior(op, z1)
                ll = ll + log_normal(z2, mean, log_sd).reshape(n, -1).sum(1)
                eps.append(((z2 - mean) * torch.exp(-log_sd)).reshape(n, -1))
                x = z1
            elif op.code == OP_TOP_PRIOR:
                mean, log_sd = self._prior(op, x)
                ll = ll + log_normal(x, mean, log_sd).reshape(n, -1).sum(1)
                eps.append(((x - mean) * torch.exp(-log_sd)).reshape(n, -1))
        return ll, torch.cat(eps, 1)

    def shapes(self, height, width):
        """(C, H, W) before each op."""
        c, h, w = self.c_in, height, width
        out = []
        for op in self.g.ops:
            out.append((c, h, w))
            if op.code == OP_SQUEEZE:
                c, h, w = 4 * c, h // 2, w // 2
            elif op.code == OP_SPLIT:
                c //= 2
        return out

    def reverse(self, eps, height, width):
        torch = self.torch
        eps = torch.as_tensor(eps, dtype=torch.float64)
        n = eps.shape[0]
        shapes = self.shapes(height, width)
        # eps sizes per split / top, in plan order
        sizes = []
        for op, (c, h, w) in zip(self.g.ops, shapes):
            if op.code == OP_SPLIT:
                sizes.append((c // 2, h, w))
            elif op.code == OP_TOP_PRIOR:
                sizes.append((c, h, w))
        parts = torch.split(eps, [a * b * d for a, b, d in sizes], 1)
        k = len(parts) - 1
        x = None
        for op, (c, h, w) in zip(reversed(self.g.ops), reversed(shapes)):
            if op.code == OP_TOP_PRIOR:
                e = parts[k].reshape(n, c, h, w)
                mean, log_sd = self._prior(op, e)
                x = mean + torch.exp(log_sd) * e
                k -= 1
            elif op.code == OP_SPLIT:
                e = parts[k].reshape(n, c // 2, h, w)
                mean, log_sd = self._prior(op, x)
                x = torch.cat([x, mean + torch.exp(log_sd) * e], 1)
                k -= 1
            elif op.code == OP_COUPLING:
                ya, yb = x[:, :c // 2], x[:, c // 2:]
                hh = self._coupling_h(op, ya)
                if op.ints[2] == 0:
                    raw_s, t_ = self._split_st(hh, op.ints[3])
                    yb = yb / torch.sigmoid(raw_s) - t_
                else:
                    yb = yb - hh
                x = torch.cat([ya, yb], 1)
            elif op.code == OP_AFFINE:
                x = torch.einsum("oc,nchw->nohw", self.t[op.tensors[2]], x) + self.t[op.tensors[3]].view(1, -1, 1, 1)
            elif op.code == OP_SQUEEZE:
                x = x.reshape(n, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3).reshape(n, c, h, w)
        return x


def log_normal(z, mean, log_sd):
    return -0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (z - mean) ** 2 * (-2 * log_sd).exp()


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="validate and describe a .glow file")
    ap.add_argument("file")
    ap.add_argument("--no-verify", action="store_true", help="skip tensor CRCs")
    a = ap.parse_args(argv)
    try:
        g = read_glow(a.file, verify=not a.no_verify)
    except GlowFileError as e:
        print("%s: invalid: %s" % (a.file, e), file=sys.stderr)
        return 1
    print("%s: version %d.%d, %d bytes, %d tensors, %d ops" % (a.file, g.version[0], g.version[1],
                                                             g.file_size, len(g.tensors), len(g.ops)))
    for k, v in g.kv.items():
        print("  %s = %r" % (k, v))
    counts = {}
    for op in g.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    print("  plan: " + ", ".join("%s x%d" % kv for kv in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
