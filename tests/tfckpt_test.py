#!/usr/bin/env python3
"""Checks of models/tfckpt.py (TensorFlow V2 checkpoints without TensorFlow):

  crc        glowfile.crc32c (the .index, .data and .glow CRCs): the standard vector,
             the byte loop on lengths around every lane boundary (small lane caps too)
  snappy     hand-made streams (every literal and copy form, overlapping
             copies), a matching compressor's output, malformed streams
  roundtrip  write_checkpoint -> list_variables / read_variables over dtypes,
             shapes, shared-prefix names, block sizes, restart intervals,
             snappy, 1-3 shards; reading a subset of names
  resolve    resolve_prefix on a prefix, .index, .data-*, directories
  entries    hand-made index entries: unreadable dtypes, partitioned
             variables, bad headers and entries, unknown fields skipped
  corrupt    bytes flipped (every one of the index, every third of the data
             files), both files truncated (every 5th / 7th length and the last
             64), garbage, block mutations with the CRC fixed up: always a
             one-line CheckpointError naming the file, or the right data only
             where the footer's handles are unchanged (its zero padding, or a
             varint made longer with the same value)

usage: tests/tfckpt_test.py   (ends with 'N passed, N failed'; exit 1 if any failed)
"""
import os
import random
import struct
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import glowfile  # noqa: E402
import tfckpt  # noqa: E402
from tfckpt import CheckpointError  # noqa: E402

RESULTS = []


def test(fn):
    t = time.time()
    try:
        note = fn()
        RESULTS.append((fn.__name__, True))
        print("ok   %-10s %5.2fs %s" % (fn.__name__, time.time() - t, note or ""))
    except Exception:
        RESULTS.append((fn.__name__, False))
        print("FAIL %s" % fn.__name__)
        traceback.print_exc()
    return fn


def expect_error(fn, *names):
    """fn() must raise CheckpointError with a one-line message naming one of names."""
    try:
        fn()
    except CheckpointError as e:
        msg = str(e)
        assert "\n" not in msg and any(n in msg for n in names), msg
        return msg
    raise AssertionError("no CheckpointError (expected one naming %s)" % (names,))


def same(got, want):
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for k, v in want.items():
        v = np.asarray(v)
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v), k


# ---- crc ------------------------------------------------------------------------
def slow_crc(b):
    return glowfile._crc_loop(0xFFFFFFFF, b) ^ 0xFFFFFFFF


@test
def crc():
    assert glowfile.crc32c(b"123456789") == 0xE3069283
    assert glowfile.crc32c(b"") == 0 and glowfile.crc32c(bytes(32)) == 0x8A9136AA
    rng = np.random.default_rng(1)
    keep = glowfile.MAX_LANES
    n_checked = 0
    try:
        lo, steps = glowfile.MIN_LANES, glowfile.MIN_STEPS
        for cap in (keep, 4 * lo, lo):
            glowfile.MAX_LANES = cap
            lengths = {0, 1, 3, 4, 5, 7, 255, 256, 1000}
            for lanes in (lo, 2 * lo, 4 * lo, 256, cap):  # where the lane count and the step count change
                for base in (4 * lanes * steps, 4 * lanes * (steps + 1), 4 * lanes * 2 * steps, 4 * lanes * 5 * steps):
                    lengths |= {base - 5, base - 1, base, base + 1, base + 3, base + 4 * lanes - 1}
            for n in sorted(x for x in lengths if 0 <= x <= 200000):
                b = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
                assert glowfile.crc32c(b) == slow_crc(b), (cap, n)
                n_checked += 1
    finally:
        glowfile.MAX_LANES = keep
    for n in (4 * steps * keep - 1, 4 * steps * keep + 12345):  # all lanes; continuing a CRC
        b = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert glowfile.crc32c(b) == slow_crc(b), n
        assert glowfile.crc32c(b[n // 3:], glowfile.crc32c(b[:n // 3])) == glowfile.crc32c(b), n
    assert glowfile.crc32c(np.arange(1000, dtype=np.float32)) == slow_crc(np.arange(1000, dtype=np.float32).tobytes())
    for v in (0, 1, 0xFFFFFFFF, 0x12345678):
        assert tfckpt._unmask(tfckpt._mask(v)) == v
    b = rng.integers(0, 256, 64 << 20, dtype=np.uint8).tobytes()
    t = time.time()
    glowfile.crc32c(b)
    return "%d lengths; %.0f MB/s on 64 MiB" % (n_checked, 64 * 1.048576 / (time.time() - t))


# ---- snappy -----------------------------------------------------------------------
def snappy_compress(data, rng):
    """A greedy snappy encoder using every element form (chosen at random among the
    valid ones), so the decoder's copy paths see real streams."""
    def literal(chunk):
        n = len(chunk) - 1
        if n < 60 and rng.random() < 0.7:
            return bytes([n << 2]) + chunk
        k = max(1, (n.bit_length() + 7) // 8)
        k = rng.randint(k, 4)
        return bytes([(59 + k) << 2]) + n.to_bytes(k, "little") + chunk

    out, table, i, lit = bytearray(tfckpt._enc_varint(len(data))), {}, 0, 0
    while i + 4 <= len(data):
        j = table.get(data[i:i + 4])
        table[data[i:i + 4]] = i
        if j is None:
            i += 1
            continue
        n = 4
        while i + n < len(data) and n < 64 and data[j + n] == data[i + n]:
            n += 1
        off = i - j
        if lit < i:
            out += literal(data[lit:i])
        kinds = [3] + ([2] if off < 65536 else []) + ([1] if off < 2048 and n <= 11 else [])
        kind = rng.choice(kinds)
        if kind == 1:
            out += bytes([((off >> 8) << 5) | ((n - 4) << 2) | 1, off & 0xFF])
        else:
            out += bytes([((n - 1) << 2) | kind]) + off.to_bytes(2 if kind == 2 else 4, "little")
        i += n
        lit = i
    if lit < len(data):
        out += literal(data[lit:])
    return bytes(out)


@test
def snappy():
    d = tfckpt._snappy_decompress
    assert d(b"\x00") == b""
    assert d(b"\x03\x08abc") == b"abc"
    assert d(b"\x03" + bytes([60 << 2, 2]) + b"abc") == b"abc"                # 1-byte literal length
    assert d(b"\x03" + bytes([62 << 2, 2, 0, 0]) + b"abc") == b"abc"          # 3-byte
    assert d(b"\x03" + bytes([63 << 2, 2, 0, 0, 0]) + b"abc") == b"abc"       # 4-byte
    assert d(b"\x0a\x00a" + bytes([(5 << 2) | 1, 1])) == b"a" * 10             # copy-1, overlapping
    assert d(b"\x09\x08abc" + bytes([(5 << 2) | 2, 3, 0])) == b"abcabcabc"     # copy-2, overlapping
    assert d(b"\x07\x08abc" + bytes([(3 << 2) | 3, 2, 0, 0, 0])) == b"abcbcbc"  # copy-4
    big = bytes(range(256)) * 9
    assert d(tfckpt._enc_varint(len(big) + 8) + tfckpt._snappy_literal(big)[2:]
             + bytes([(((2000 >> 8) << 5) | (4 << 2) | 1), 2000 & 0xFF])) == big + big[-2000:-1992]
    rng = random.Random(5)
    for n in (0, 1, 5, 100, 5000, 70000, 200000):
        data = bytes(rng.choice(b"abcd") for _ in range(n // 2)) + os.urandom(n // 4) + bytes(n - n // 2 - n // 4)
        data = data + data[:n // 3]
        assert d(snappy_compress(data, rng)) == data and d(tfckpt._snappy_literal(data)) == data
    bad = [b"", b"\x80", b"\x05", b"\x03\x08ab", b"\x03\x08abcd", b"\x02\x08abc", b"\x04\x08abc",
           b"\x03" + bytes([61 << 2, 2]), b"\x05\x00a" + bytes([1, 0]), b"\x0a\x00a" + bytes([1, 2]),
           b"\x0a\x00a" + bytes([(5 << 2) | 1]), b"\x0a\x00a" + bytes([2, 1]), b"\x0a\x00a" + bytes([3, 1, 0, 0]),
           b"\x01\x00a" + bytes([(5 << 2) | 2, 1, 0]), b"\xff\xff\xff\xff\xff\xff"]
    for b in bad:
        try:
            d(b)
            raise AssertionError("accepted %r" % b)
        except tfckpt._Bad:
            pass
    fuzz = 0
    for _ in range(3000):  # random garbage: only _Bad, never anything else
        b = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            d(b)
        except tfckpt._Bad:
            fuzz += 1
    return "%d of 3000 garbage streams rejected" % fuzz


# ---- round trips ------------------------------------------------------------------------
def sample_arrays(rng, n_names=60):
    arrs = {
        "scalar_f32": np.float32(1.5), "scalar_f64": np.array(-2.25), "scalar_i32": np.int32(-7),
        "scalar_i64": np.int64(1 << 40), "empty": np.zeros((0,), np.float32), "empty2": np.zeros((3, 0, 2), np.int64),
        "odd": rng.standard_normal(7).astype(np.float32), "odd2": rng.standard_normal((3, 5, 7)),
        "conv/W": rng.standard_normal((3, 3, 5, 8)).astype(np.float32),
        "ints": rng.integers(-2**31, 2**31, (4, 9), dtype=np.int32),
        "longs": rng.integers(-2**63, 2**63 - 1, 13, dtype=np.int64),
        "u8": rng.integers(0, 256, 5, dtype=np.uint8), "i8": np.arange(-3, 3, dtype=np.int8),
        "i16": np.arange(9, dtype=np.int16), "u16": np.arange(4, dtype=np.uint16),
        "u32": np.arange(3, dtype=np.uint32), "u64": np.array([2**64 - 1], np.uint64),
        "f16": np.array([0.5, -1], np.float16), "flags": np.array([True, False, True]),
        "c64": np.array([1 + 2j], np.complex64), "c128": np.array([[3 - 1j]], np.complex128),
        "fortran": np.asfortranarray(rng.standard_normal((4, 3)).astype(np.float32)),
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "unicode/ü": np.float32(3),
    }
    for i in range(n_names):  # names sharing long prefixes
        name = "model/encoder/level_%d/step_%02d/%s" % (i % 3, i, ("f1/l_1/W", "f1/l_2/b", "actnorm/logs")[i % 3])
        arrs[name] = rng.standard_normal((i % 4 + 1, 2)).astype(np.float32 if i % 2 else np.float64)
    return arrs


def table_shape(prefix):
    """(data blocks, max restart points in a data block) of prefix.index."""
    buf = open(prefix + ".index", "rb").read()
    io, isz, _ = tfckpt._handle(buf[-48:], tfckpt._handle(buf[-48:], 0, 40)[2], 40)
    restarts = []
    for _, v in tfckpt._block_entries(tfckpt._read_block(buf, io, isz, "index"), "index"):
        off, size, _ = tfckpt._handle(v, 0, len(v))
        restarts.append(int.from_bytes(tfckpt._read_block(buf, off, size, "data")[-4:], "little"))
    return len(restarts), max(restarts)


@test
def roundtrip():
    rng = np.random.default_rng(2)
    arrs = sample_arrays(rng)
    want = {k: np.asarray(v).astype(np.asarray(v).dtype.newbyteorder("<")) for k, v in arrs.items()}
    n = 0
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "model.ckpt")
        configs = [(4096, 16, "none", 1), (64, 1, "none", 2), (200, 3, "snappy", 2), (1 << 20, 1000, "snappy", 3),
                   (1, 2, "none", 1)]
        for block_size, restart, comp, shards in configs:
            for f in os.listdir(d):
                os.remove(os.path.join(d, f))
            tfckpt.write_checkpoint(prefix, arrs, block_size=block_size, restart_interval=restart,
                                    compression=comp, num_shards=shards)
            blocks, restarts = table_shape(prefix)
            if 64 <= block_size <= 200:
                assert blocks > 5 and (restarts > 1 or restart == 1), (blocks, restarts)
            assert len([f for f in os.listdir(d) if ".data-" in f]) == shards
            listed = tfckpt.list_variables(prefix)
            assert listed == {k: (np.asarray(v).dtype.name, np.shape(v)) for k, v in arrs.items()}, listed
            same(tfckpt.read_variables(prefix), want)
            same(tfckpt.read_variables(prefix, verify_crc=False), want)
            some = ["odd2", "scalar_i64", "unicode/ü", "model/encoder/level_1/step_04/f1/l_2/b"]
            same(tfckpt.read_variables(prefix, some), {k: want[k] for k in some})
            assert tfckpt.read_variables(prefix, []) == {}
            n += 1
        keep = tfckpt._snappy_literal  # blocks compressed with real back-references
        tfckpt._snappy_literal = lambda data: snappy_compress(data, random.Random(len(data)))
        try:
            tfckpt.write_checkpoint(prefix, arrs, block_size=300, compression="snappy")
        finally:
            tfckpt._snappy_literal = keep
        same(tfckpt.read_variables(prefix), want)
        tfckpt.write_checkpoint(prefix, {})  # the header as TF writes it: num_shards 1, version {producer 1}
        assert tfckpt._read_table(open(prefix + ".index", "rb").read()) == [(b"", b"\x08\x01\x1a\x02\x08\x01")]
        assert tfckpt.list_variables(prefix) == {} and tfckpt.read_variables(prefix) == {}
        expect_error(lambda: tfckpt.read_variables(prefix, ["nope"]), "nope")
    return "%d configurations + matching snappy, %d names" % (n, len(arrs))


# ---- resolve_prefix ----------------------------------------------------------------------
@test
def resolve():
    with tempfile.TemporaryDirectory() as d:
        logs = os.path.join(d, "logs")
        os.mkdir(logs)
        p = os.path.join(logs, "model_best_loss.ckpt")
        tfckpt.write_checkpoint(p, {"a": np.ones(3, np.float32)}, num_shards=2)
        for form in (p, p + ".index", p + ".data-00000-of-00002", p + ".data-00001-of-00002", logs, logs + "/"):
            assert tfckpt.resolve_prefix(form) == p, form
        assert os.path.samefile(tfckpt.resolve_prefix(logs) + ".index", p + ".index")
        other = os.path.join(logs, "mödel \"x\".ckpt")
        tfckpt.write_checkpoint(other, {"b": np.zeros(2)})
        expect_error(lambda: tfckpt.resolve_prefix(logs), logs)  # two *.index, no checkpoint file
        state = os.path.join(logs, "checkpoint")
        esc = "".join("\\%03o" % c if c > 127 else "\\\"" if c == 34 else chr(c) for c in "mödel \"x\".ckpt".encode())
        for text, want in [('model_checkpoint_path: "model_best_loss.ckpt"\n', p),
                           ('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "model_best_loss.ckpt"\n'
                            % esc, other),
                           ('model_checkpoint_path: "/home/someone/logs/model_best_loss.ckpt"\n', p),
                           ('model_checkpoint_path: "%s"\n' % p, p)]:
            with open(state, "w") as f:
                f.write(text)
            assert tfckpt.resolve_prefix(logs) == want, (text, tfckpt.resolve_prefix(logs))
        with open(state, "w") as f:
            f.write('model_checkpoint_path: "gone.ckpt"\n')
        expect_error(lambda: tfckpt.resolve_prefix(logs), logs)
        os.remove(other + ".index")
        assert tfckpt.resolve_prefix(logs) == p  # stale checkpoint file, one *.index
        for bad in (os.path.join(d, "missing"), p + ".data", os.path.join(d, "x.index"), state):
            expect_error(lambda: tfckpt.resolve_prefix(bad), bad)
        empty = os.path.join(d, "empty")
        os.mkdir(empty)
        expect_error(lambda: tfckpt.resolve_prefix(empty), empty)
        # named pipes that nothing writes to: refused or passed over, never waited on
        fifo = os.path.join(d, "fifo")
        os.mkdir(fifo)
        q = os.path.join(fifo, "m.ckpt")
        tfckpt.write_checkpoint(q, {"a": np.ones(3, np.float32)})
        os.mkfifo(os.path.join(fifo, "checkpoint"))
        assert tfckpt.resolve_prefix(fifo) == q
        os.remove(q + ".data-00000-of-00001")
        os.mkfifo(q + ".data-00000-of-00001")
        expect_error(lambda: tfckpt.read_variables(q), q + ".data-00000-of-00001")
        os.remove(q + ".index")
        os.mkfifo(q + ".index")
        expect_error(lambda: tfckpt.list_variables(q), q + ".index")


# ---- hand-made entries -------------------------------------------------------------------
F = tfckpt._enc_field


def entry(dtype=1, dims=(2,), shard=0, offset=0, size=8, crc=None, data=b"", extra=b""):
    shape = b"".join(F(2, 2, F(1, 0, x)) for x in dims)
    c = tfckpt._mask(glowfile.crc32c(data)) if crc is None else crc
    return (F(1, 0, dtype) + F(2, 2, shape) + F(3, 0, shard) + F(4, 0, offset) + F(5, 0, size)
            + F(6, 5, c) + extra)


def write_raw(prefix, items, header=None, data=b""):
    header = F(1, 0, 1) if header is None else header
    tfckpt._write_table(prefix + ".index", [(b"", header)] + sorted(items))
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)


@test
def entries():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.ckpt")
        x = np.array([1.0, -2.0], np.float32)
        bf = np.array([0x3F80, 0xC000], "<u2").tobytes()  # bfloat16 1.0, -2.0
        unknown = F(99, 0, 5) + F(98, 2, b"zz") + tfckpt._enc_varint(97 << 3 | 1) + bytes(8) + F(96, 5, 0)
        good = [(b"x", entry(data=x.tobytes(), extra=unknown)), (b"bf", entry(14, (2,), offset=8, size=4, data=bf)),
                (b"s", entry(7, (), offset=12, size=3, data=b"abc")), (b"r", entry(20, (), size=0)),
                (b"q", entry(55, (), size=0)), (b"part", entry(dims=(4,), size=0, extra=F(7, 2, b""))),
                (b"\x00\x00part\x00\x01", entry(data=x.tobytes()))]
        write_raw(p, good, header=F(1, 0, 1) + F(2, 0, 0) + F(3, 2, F(1, 0, 1)) + unknown,
                  data=x.tobytes() + bf + b"abc")
        assert tfckpt.list_variables(p) == {"x": ("float32", (2,)), "bf": ("bfloat16", (2,)), "s": ("string", ()),
                                            "r": ("resource", ()), "q": ("dtype_55", ()), "part": ("float32", (4,))}
        got = tfckpt.read_variables(p)
        assert sorted(got) == ["bf", "x"] and np.array_equal(got["x"], x)
        assert got["bf"].dtype == np.float32 and np.array_equal(got["bf"], x)
        for name in ("s", "r", "q", "part", "missing"):
            expect_error(lambda: tfckpt.read_variables(p, [name]), p + ".index")
        idx = p + ".index"
        bad = {  # (items, header): each gives CheckpointError naming the .index
            "big endian": ([], F(1, 0, 1) + F(2, 0, 1)), "no shards": ([], b""), "negative shards": ([], F(1, 0, -1)),
            "shard range": ([(b"x", entry(shard=1))], None), "neg offset": ([(b"x", entry(offset=-8))], None),
            "size": ([(b"x", entry(size=12))], None), "neg dim": ([(b"x", entry(dims=(-1, 2), size=0))], None),
            "absurd": ([(b"x", entry(dims=(1 << 40, 1 << 40), size=0))], None),
            "too many dims": ([(b"x", entry(dims=(1,) * 65, size=4))], None),
            "33 dims": ([(b"x", entry(dims=(1,) * 32 + (2,), data=x.tobytes()))], None),  # numpy holds 32
            "unknown rank": ([(b"x", entry(dims=(), size=4) + F(2, 2, F(3, 0, 1)))], None),
            "wire type": ([(b"x", entry() + F(4, 2, b"1"))], None), "crc wire": ([(b"x", F(6, 0, 1))], None),
            "group": ([(b"x", entry() + bytes([(9 << 3) | 3]))], None),
            "field 0": ([(b"x", entry() + b"\x00\x00")], None),
            "trunc proto": ([(b"x", entry()[:-2])], None), "header type": ([], F(1, 2, b"\x01")),
            "varint": ([(b"x", entry() + b"\x28" + b"\xff" * 11)], None),
        }
        for what, (items, header) in bad.items():
            write_raw(p, items, header, data=x.tobytes())
            try:
                expect_error(lambda: tfckpt.read_variables(p), idx)
            except AssertionError as e:
                raise AssertionError("%s: %s" % (what, e))
        tfckpt._write_table(idx, [(b"x", entry())])  # no header
        expect_error(lambda: tfckpt.list_variables(p), idx)
        tfckpt._write_table(idx, [(b"", F(1, 0, 1)), (b"", F(1, 0, 1))])  # duplicate keys
        expect_error(lambda: tfckpt.list_variables(p), idx)
        write_raw(p, [(b"x", entry(crc=0, data=x.tobytes()))], data=x.tobytes())  # wrong tensor CRC
        expect_error(lambda: tfckpt.read_variables(p), p + ".data-00000-of-00001")
        assert np.array_equal(tfckpt.read_variables(p, verify_crc=False)["x"], x)
        write_raw(p, [(b"x", entry(offset=1 << 62, data=x.tobytes()))], data=x.tobytes())  # absurd offset
        expect_error(lambda: tfckpt.read_variables(p), p + ".data-00000-of-00001")
        os.remove(p + ".data-00000-of-00001")  # missing data file
        expect_error(lambda: tfckpt.read_variables(p), p + ".data-00000-of-00001")
        assert tfckpt.list_variables(p) == {"x": ("float32", (2,))}
        os.remove(idx)
        expect_error(lambda: tfckpt.list_variables(p), idx)
    return "%d malformed entries/headers" % len(bad)


# ---- corruption ----------------------------------------------------------------------------
def footer_values(buf):
    """The footer's two block handles, or None: a flip that leaves them (its padding,
    or a varint made longer with the same value) goes unseen."""
    try:
        f = buf[-48:]
        mo, ms, pos = tfckpt._handle(f, 0, 40)
        return (mo, ms) + tfckpt._handle(f, pos, 40)[:2]
    except tfckpt._Bad:
        return None


def put(path, data):
    """Rewrite path in place: truncating to zero and rewriting makes ext4 flush the
    file at every close, which made this test I/O-bound."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def check_read(prefix, want, names, allowed_ok=False, any_ok=False):
    """read_variables gives want (only where allowed) or a one-line CheckpointError naming a file."""
    try:
        got = tfckpt.read_variables(prefix)
    except CheckpointError as e:
        msg = str(e)
        assert "\n" not in msg and any(n in msg for n in names), msg
        return False
    if not any_ok:
        assert allowed_ok, "corruption not detected"
        same(got, want)
    return True


@test
def corrupt():
    rng = np.random.default_rng(3)
    arrs = {k: v for k, v in sample_arrays(rng, 12).items() if k in ("scalar_f32", "empty", "odd", "ints", "longs")
            or k.startswith("model/")}
    want = {k: np.asarray(v) for k, v in arrs.items()}
    stats = {"flips": 0, "unseen flips": 0, "truncations": 0, "fixed-crc mutations": 0}
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.ckpt")
        for comp, shards in (("none", 1), ("snappy", 2)):
            tfckpt.write_checkpoint(p, arrs, block_size=150, restart_interval=3, compression=comp, num_shards=shards)
            files = [p + ".index"] + [tfckpt._data_path(p, i, shards) for i in range(shards)]
            names = files
            for path in files:
                orig = open(path, "rb").read()
                handles = footer_values(orig)
                index = path.endswith(".index")
                for off in range(0, len(orig), 1 if index else 3):
                    in_footer = index and off >= len(orig) - 48
                    for mask in (0x01, 0x80, 0xFF) if in_footer else [(0x01, 0x80, 0xFF)[off % 3]]:
                        b = bytearray(orig)
                        b[off] ^= mask
                        put(path, b)
                        try:
                            unseen = in_footer and footer_values(b) == handles and b[-8:] == orig[-8:]
                            stats["unseen flips"] += check_read(p, want, names, allowed_ok=unseen)
                        except AssertionError as e:
                            raise AssertionError("%s byte %d of %d ^ %#x: %s" % (path, off, len(orig), mask, e))
                        stats["flips"] += 1
                for n in sorted(set(range(0, len(orig), 5 if index else 7)) | set(range(len(orig) - 64, len(orig)))):
                    put(path, orig[:n])
                    check_read(p, want, names)
                    stats["truncations"] += 1
                put(path, orig + b"\0" * 7)  # appended bytes: index fails, data reads fine
                check_read(p, want, names, allowed_ok=not index)
                put(path, orig)
            same(tfckpt.read_variables(p), want)
        # block contents mutated with the CRC fixed up: the parsers behind the CRC see garbage
        tfckpt.write_checkpoint(p, arrs, block_size=150, restart_interval=3)
        orig = open(p + ".index", "rb").read()
        f = orig[-48:]
        mo, ms, pos = tfckpt._handle(f, 0, 40)
        io, isz, _ = tfckpt._handle(f, pos, 40)
        blocks = [(mo, ms), (io, isz)] + [tfckpt._handle(v, 0, len(v))[:2] for _, v in
                                          tfckpt._block_entries(tfckpt._read_block(orig, io, isz, "i"), "i")]
        r = random.Random(4)
        for _ in range(1500):
            off, size = r.choice(blocks)
            b = bytearray(orig)
            for _ in range(r.choice((1, 1, 2, 5))):
                if size:
                    b[off + r.randrange(size)] = r.choice((0, 1, 0x7F, 0x80, 0xFF, r.randrange(256)))
            crc = glowfile.crc32c(bytes(b[off:off + size + 1]))
            b[off + size + 1:off + size + 5] = struct.pack("<I", tfckpt._mask(crc))
            put(p + ".index", b)
            check_read(p, want, [p + ".index", p + ".data-00000-of-00001"], any_ok=True)
            stats["fixed-crc mutations"] += 1
        for n in (0, 1, 47, 48, 49, 100, 1000):  # garbage, with and without the magic
            for tail in (b"", struct.pack("<Q", tfckpt._MAGIC)):
                put(p + ".index", os.urandom(n) + tail)
                check_read(p, want, [p + ".index"])
        put(p + ".index", orig)
        same(tfckpt.read_variables(p), want)
    return ", ".join("%d %s" % (v, k) for k, v in stats.items())


if __name__ == "__main__":
    failed = sum(1 for _, ok in RESULTS if not ok)
    print("%d passed, %d failed" % (len(RESULTS) - failed, failed))
    sys.exit(1 if failed else 0)
