"""Read (and, for tests, write) TensorFlow V2 checkpoints without TensorFlow.

    prefix = resolve_prefix("logs")              # or the prefix, .index, .data-* file
    list_variables(prefix)   -> {name: (dtype_str, shape)}
    read_variables(prefix)   -> {name: numpy array}

A V2 checkpoint ("tensor bundle") is PREFIX.index, a LevelDB-style SSTable
whose key "" holds a BundleHeaderProto and every other key is a tensor name
holding a BundleEntryProto, plus PREFIX.data-%05d-of-%05d files holding the raw
little-endian C-order tensor bytes at the offsets the entries give. Both
checksums (masked crc32c per table block and per tensor) are verified. Every
malformed input raises CheckpointError with one line naming the file.
Pure Python + numpy; used by models/export.py (source `openai`).
"""
import errno
import os
import re
import stat
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from glowfile import crc32c  # noqa: E402


class CheckpointError(Exception):
    """A checkpoint that cannot be found or read; the message names the file."""


class _Bad(Exception):
    """A format violation; the caller adds the file name."""


def _mask(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _unmask(masked):
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---- varints, protobuf wire format, snappy ------------------------------------------
def _varint(buf, pos, end, max_bytes=10):
    """(value, new pos) of the varint at buf[pos:end]."""
    value, shift = 0, 0
    for i in range(pos, min(end, pos + max_bytes)):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    raise _Bad("varint at %d %s" % (pos, "runs off the end" if end - pos < max_bytes else "too long"))


def _proto_fields(buf):
    """Yield (field, wire type, value) of a protobuf message; bytes for wire type 2."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        field, wt = tag >> 3, tag & 7
        if wt == 0:
            value, pos = _varint(buf, pos, end)
        elif wt in (1, 5):
            n = 8 if wt == 1 else 4
            if pos + n > end:
                raise _Bad("protobuf fixed%d field %d runs off the end" % (8 * n, field))
            value, pos = int.from_bytes(buf[pos:pos + n], "little"), pos + n
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Bad("protobuf field %d (%d bytes) runs off the end" % (field, n))
            value, pos = bytes(buf[pos:pos + n]), pos + n
        else:
            raise _Bad("protobuf wire type %d (field %d) unsupported" % (wt, field))
        if field == 0:
            raise _Bad("protobuf field number 0")
        yield field, wt, value


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _check_wt(field, wt, want, what):
    if wt != want:
        raise _Bad("%s (field %d) has wire type %d, expected %d" % (what, field, wt, want))


def _snappy_decompress(buf):
    """A snappy block: varint length, then literals and back-references."""
    n, pos = _varint(buf, 0, len(buf), 5)
    out = bytearray()
    while pos < len(buf):
        tag, pos = buf[pos], pos + 1
        kind = tag & 3
        if kind == 0:
            length = tag >> 2
            if length >= 60:  # length - 1 in the next 1..4 bytes
                k = length - 59
                if pos + k > len(buf):
                    raise _Bad("snappy literal length runs off the end")
                length, pos = int.from_bytes(buf[pos:pos + k], "little"), pos + k
            length += 1
            if pos + length > len(buf):
                raise _Bad("snappy literal runs off the end")
            out += buf[pos:pos + length]
            pos += length
        else:
            k = {1: 1, 2: 2, 3: 4}[kind]
            length = 4 + ((tag >> 2) & 7) if kind == 1 else 1 + (tag >> 2)
            if pos + k > len(buf):
                raise _Bad("snappy copy runs off the end")
            offset = int.from_bytes(buf[pos:pos + k], "little") | ((tag >> 5) << 8 if kind == 1 else 0)
            pos += k
            if not 0 < offset <= len(out):
                raise _Bad("snappy copy offset %d with %d bytes decoded" % (offset, len(out)))
            start = len(out) - offset
            chunk = out[start:start + length]  # overlapping copy: the pattern repeats
            out += (chunk * (length // len(chunk) + 1))[:length]
        if len(out) > n:
            raise _Bad("snappy data longer than its stated %d bytes" % n)
    if len(out) != n:
        raise _Bad("snappy data is %d bytes, stated %d" % (len(out), n))
    return bytes(out)


# ---- the SSTable (.index) ------------------------------------------------------
_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_MAX_INDEX = 1 << 30


def _read_block(buf, offset, size, what):
    """A block's contents (decompressed) after checking its 5-byte trailer's CRC."""
    if offset + size + 5 > len(buf) - _FOOTER:
        raise _Bad("%s block [%d, +%d) runs past the table's end (%d bytes)" % (what, offset, size, len(buf)))
    contents = buf[offset:offset + size + 1]  # with the compression type byte
    stored = int.from_bytes(buf[offset + size + 1:offset + size + 5], "little")
    if _unmask(stored) != crc32c(contents):
        raise _Bad("%s block at offset %d: CRC mismatch" % (what, offset))
    kind = contents[-1]
    if kind == 1:
        return _snappy_decompress(contents[:-1])
    if kind != 0:
        raise _Bad("%s block at offset %d: unknown compression type %d" % (what, offset, kind))
    return contents[:-1]


def _block_entries(block, what):
    """[(key, value)] of a block: prefix-compressed entries, restart array, count."""
    if len(block) < 4:
        raise _Bad("%s block of %d bytes" % (what, len(block)))
    n = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * n
    if n < 1 or limit < 0:
        raise _Bad("%s block: %d restart points in %d bytes" % (what, n, len(block)))
    restarts = struct.unpack_from("<%dI" % n, block, limit)
    if restarts[0] != 0 or any(not restarts[i] < restarts[i + 1] < limit for i in range(n - 1)):
        raise _Bad("%s block: bad restart array" % what)
    pos, key, out = 0, b"", []
    while pos < limit:
        shared, pos = _varint(block, pos, limit, 5)
        unshared, pos = _varint(block, pos, limit, 5)
        vlen, pos = _varint(block, pos, limit, 5)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise _Bad("%s block: entry at %d runs off the end" % (what, pos))
        key = key[:shared] + bytes(block[pos:pos + unshared])
        out.append((key, block[pos + unshared:pos + unshared + vlen]))
        pos += unshared + vlen
    return out


def _handle(buf, pos, end):
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return offset, size, pos


def _read_table(buf):
    """All (key, value) pairs of the table in buf, keys strictly increasing."""
    if len(buf) < _FOOTER:
        raise _Bad("%d bytes, too short for a table footer" % len(buf))
    footer = buf[-_FOOTER:]
    if int.from_bytes(footer[40:], "little") != _MAGIC:
        raise _Bad("bad table magic (not a TensorFlow checkpoint index)")
    meta_off, meta_size, pos = _handle(footer, 0, 40)
    index_off, index_size, _ = _handle(footer, pos, 40)
    _block_entries(_read_block(buf, meta_off, meta_size, "metaindex"), "metaindex")
    items = []
    for _, value in _block_entries(_read_block(buf, index_off, index_size, "index"), "index"):
        offset, size, end = _handle(value, 0, len(value))
        if end != len(value):
            raise _Bad("index block: bad block handle")
        for key, v in _block_entries(_read_block(buf, offset, size, "data"), "data"):
            if items and key <= items[-1][0]:
                raise _Bad("keys out of order at %r" % key)
            items.append((key, v))
    return items


# ---- the bundle: header and entries ----------------------------------------------
# DataType enum -> (name, numpy dtype of the stored bytes or None when not readable)
_DTYPES = {1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"),
           5: ("int16", "<i2"), 6: ("int8", "i1"), 7: ("string", None), 8: ("complex64", "<c8"),
           9: ("int64", "<i8"), 10: ("bool", "?"), 11: ("qint8", "i1"), 12: ("quint8", "u1"),
           13: ("qint32", "<i4"), 14: ("bfloat16", "<u2"), 15: ("qint16", "<i2"), 16: ("quint16", "<u2"),
           17: ("uint16", "<u2"), 18: ("complex128", "<c16"), 19: ("float16", "<f2"),
           20: ("resource", None), 21: ("variant", None), 22: ("uint32", "<u4"), 23: ("uint64", "<u8")}
_CODE_OF = {name: code for code, (name, t) in _DTYPES.items() if t and np.dtype(t).name == name}


def _parse_shape(buf):
    dims = []
    for field, wt, v in _proto_fields(buf):
        if field == 2:
            _check_wt(field, wt, 2, "shape dim")
            size = 0
            for f2, wt2, v2 in _proto_fields(v):
                if f2 == 1:
                    _check_wt(f2, wt2, 0, "dim size")
                    size = _signed(v2)
            dims.append(size)
        elif field == 3 and v:
            raise _Bad("shape of unknown rank")
    if len(dims) > 64 or any(d < 0 for d in dims) or np.prod([max(d, 1) for d in dims], dtype=object) > 1 << 56:
        raise _Bad("absurd shape %s" % (dims,))
    return tuple(dims)


def _parse_entry(name, buf, num_shards):
    """A BundleEntryProto as a dict, checked against the header and its dtype."""
    e = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc": 0, "sliced": False}
    want = {1: ("dtype", 0), 2: ("shape", 2), 3: ("shard", 0), 4: ("offset", 0), 5: ("size", 0),
            6: ("crc", 5), 7: ("sliced", 2)}
    for field, wt, v in _proto_fields(buf):
        if field in want:
            key, w = want[field]
            _check_wt(field, wt, w, "%r: %s" % (name, key))
            e[key] = _parse_shape(v) if key == "shape" else True if key == "sliced" else _signed(v)
    e["dtype_str"], e["np"] = _DTYPES.get(e["dtype"], ("dtype_%d" % e["dtype"], None))
    if not 0 <= e["shard"] < num_shards or e["offset"] < 0 or e["size"] < 0:
        raise _Bad("%r: shard %d of %d, offset %d, size %d" % (name, e["shard"], num_shards, e["offset"], e["size"]))
    if e["np"] and not e["sliced"]:
        expect = int(np.prod(e["shape"], dtype=object)) * np.dtype(e["np"]).itemsize
        if e["size"] != expect:
            raise _Bad("%r: %d bytes stored, shape %s of %s needs %d" % (name, e["size"], list(e["shape"]),
                                                                      e["dtype_str"], expect))
    return e


def _open_regular(path):
    """path opened for reading, refused unless a regular file: a named pipe that
    nothing writes to would block open() (or read()) for ever."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _load_index(prefix):
    """(entries {name: dict}, num_shards) from PREFIX.index."""
    path = prefix + ".index"
    try:
        with _open_regular(path) as f:
            if os.fstat(f.fileno()).st_size > _MAX_INDEX:
                raise CheckpointError("%s: over %d bytes, not a checkpoint index" % (path, _MAX_INDEX))
            buf = f.read()
    except OSError as e:
        raise CheckpointError("%s: cannot read (%s)" % (path, e.strerror or e)) from None
    try:
        items = _read_table(buf)
        if not items or items[0][0] != b"":
            raise _Bad("no bundle header (key \"\")")
        num_shards, endian = 0, 0
        for field, wt, v in _proto_fields(items[0][1]):
            if field in (1, 2):
                _check_wt(field, wt, 0, "header")
                num_shards, endian = (_signed(v), endian) if field == 1 else (num_shards, v)
        if endian != 0:
            raise _Bad("big-endian checkpoint (endianness %d) unsupported" % endian)
        if not 1 <= num_shards < 1 << 31:
            raise _Bad("header says %d shards" % num_shards)
        entries = {}
        for key, value in items[1:]:
            if key[:1] == b"\0":  # a slice of a partitioned variable, named by an encoded key
                continue
            name = key.decode("utf-8", "surrogateescape")
            entries[name] = _parse_entry(name, value, num_shards)
        return entries, num_shards
    except _Bad as e:
        raise CheckpointError("%s: %s" % (path, e)) from None


def _data_path(prefix, shard, num_shards):
    return "%s.data-%05d-of-%05d" % (prefix, shard, num_shards)


# ---- public reading API ---------------------------------------------------------
def resolve_prefix(path):
    """The checkpoint prefix for a prefix, its .index or .data-* file, or a directory
    (its `checkpoint` file's model_checkpoint_path, else its only *.index)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _prefix_in_dir(path)
    m = re.fullmatch(r"(.*)\.data-\d{5}-of-\d{5}", path, re.S)
    prefix = path[:-len(".index")] if path.endswith(".index") else m.group(1) if m else path
    if not os.path.isfile(prefix + ".index"):
        raise CheckpointError("%s: not a TensorFlow checkpoint (no %s.index)" % (path, prefix))
    return prefix


def _unescape(b):
    """A protobuf text-format string's C escapes (\\", \\\\, \\n, octal \\303) -> bytes."""
    simple = {b"n": b"\n", b"t": b"\t", b"r": b"\r"}
    return re.sub(rb"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)", lambda m: (
        bytes([int(m.group(1), 8) & 0xFF]) if m.group(1)[:1].isdigit() else
        bytes([int(m.group(1)[1:], 16)]) if m.group(1)[:1] == b"x" else
        simple.get(m.group(1), m.group(1))), b, flags=re.S)


def _prefix_in_dir(d):
    state = os.path.join(d, "checkpoint")
    try:
        with _open_regular(state) as f:
            m = re.search(rb'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\\n]|\\.)*)"', f.read(1 << 20), re.M)
    except OSError:
        m = None
    if m:  # relative to d; an absolute one may come from another machine: try its basename too
        p = os.fsdecode(_unescape(m.group(1)))
        for cand in (os.path.join(d, p), os.path.join(d, os.path.basename(p))):
            if os.path.isfile(cand + ".index"):
                return cand
    try:
        indexes = sorted(n for n in os.listdir(d) if n.endswith(".index"))
    except OSError as e:
        raise CheckpointError("%s: cannot list (%s)" % (d, e.strerror or e)) from None
    if len(indexes) == 1:
        return os.path.join(d, indexes[0][:-len(".index")])
    raise CheckpointError("%s: no checkpoint file naming an existing checkpoint, and %d *.index files"
                          % (d, len(indexes)))


def list_variables(prefix):
    """{name: (dtype_str, shape tuple)} from PREFIX.index alone (no data read)."""
    entries, _ = _load_index(prefix)
    return {name: (e["dtype_str"], e["shape"]) for name, e in entries.items()}


def read_variables(prefix, names=None, verify_crc=True):
    """{name: numpy array} of the named variables, or of all readable ones (names
    None skips string/resource/variant and partitioned variables). Arrays have the
    stored dtype (little-endian), except bfloat16, widened exactly to float32.
    Each tensor is read on its own (seek + readinto), so a few names are cheap."""
    entries, num_shards = _load_index(prefix)
    if names is None:
        names = [n for n in sorted(entries) if entries[n]["np"] and not entries[n]["sliced"]]
    files, out = {}, {}
    try:
        for name in names:
            e = entries.get(name)
            why = ("no such variable" if e is None else "a partitioned variable (slices), unsupported"
                   if e["sliced"] else None if e["np"] else "dtype %s, not readable as an array" % e["dtype_str"])
            if why:
                raise CheckpointError("%s.index: %r: %s" % (prefix, name, why))
            path = _data_path(prefix, e["shard"], num_shards)
            if path not in files:
                try:
                    files[path] = _open_regular(path)
                except OSError as err:
                    raise CheckpointError("%s: cannot read (%s)" % (path, err.strerror or err)) from None
            f = files[path]
            file_size = os.fstat(f.fileno()).st_size
            if e["offset"] + e["size"] > file_size:
                raise CheckpointError("%s: %r at [%d, +%d) lies past the end (%d bytes): truncated"
                                      % (path, name, e["offset"], e["size"], file_size))
            try:
                arr = np.empty(e["shape"], e["np"])
            except ValueError:  # more dimensions than numpy's arrays have (32 in numpy 1.x)
                raise CheckpointError("%s.index: %r: shape %s has more dimensions than numpy supports"
                                      % (prefix, name, list(e["shape"]))) from None
            raw = arr.reshape(-1).view(np.uint8)
            f.seek(e["offset"])
            if e["size"] and f.readinto(raw) != e["size"]:
                raise CheckpointError("%s: short read of %r" % (path, name))
            if verify_crc and _unmask(e["crc"] & 0xFFFFFFFF) != crc32c(raw):
                raise CheckpointError("%s: %r: CRC mismatch" % (path, name))
            if e["dtype_str"] == "bfloat16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr
    finally:
        for f in files.values():
            f.close()
    return out


# ---- writing (for tests) ----------------------------------------------------------
def _enc_varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _enc_field(field, wt, v):
    tag = _enc_varint(field << 3 | wt)
    if wt == 0:
        return tag + _enc_varint(v)
    if wt == 5:
        return tag + struct.pack("<I", v)
    return tag + _enc_varint(len(v)) + v


def _snappy_literal(data):
    """A valid snappy stream of short literals only (no matching)."""
    chunks = (data[i:i + 60] for i in range(0, len(data), 60))
    return _enc_varint(len(data)) + b"".join(bytes([(len(c) - 1) << 2]) + c for c in chunks)


def _block(items, restart_interval):
    buf, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(buf))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        buf += _enc_varint(shared) + _enc_varint(len(key) - shared) + _enc_varint(len(value))
        buf += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    return bytes(buf) + struct.pack("<%dI" % (len(restarts) + 1), *restarts, len(restarts))


def _put_block(out, contents, compression):
    """Append contents + trailer to out; -> its BlockHandle bytes. Snappy is used
    whenever asked (TF keeps a block raw unless snappy saves 1/8)."""
    kind = 0
    if compression == "snappy":
        contents, kind = _snappy_literal(contents), 1
    handle = _enc_varint(len(out)) + _enc_varint(len(contents))
    body = contents + bytes([kind])
    out += body + struct.pack("<I", _mask(crc32c(body)))
    return handle


def write_checkpoint(prefix, arrays, block_size=4096, restart_interval=16, compression="none", num_shards=1):
    """Write PREFIX.index and PREFIX.data-0000i-of-0000n (tensor i % n in shard i)."""
    if compression not in ("none", "snappy") or num_shards < 1 or restart_interval < 1:
        raise ValueError("compression %r, num_shards %d, restart_interval %d" % (compression, num_shards,
                                                                               restart_interval))
    header = _enc_field(1, 0, num_shards) + _enc_field(3, 2, _enc_field(1, 0, 1))  # version {producer: 1}
    items = [(b"", header)]
    sizes = [0] * num_shards
    files = [open(_data_path(prefix, i, num_shards), "wb") for i in range(num_shards)]
    try:
        for i, name in enumerate(sorted(arrays, key=lambda s: s.encode("utf-8"))):
            a = np.asarray(arrays[name])
            if a.dtype.name not in _CODE_OF or not name:
                raise ValueError("%r: dtype %s not writable (or empty name)" % (name, a.dtype))
            raw = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
            shard = i % num_shards
            files[shard].write(raw)
            shape = b"".join(_enc_field(2, 2, _enc_field(1, 0, d) if d else b"") for d in a.shape)
            ints = ((3, shard), (4, sizes[shard]), (5, len(raw)))  # shard_id, offset, size; proto3 omits zeros
            entry = (_enc_field(1, 0, _CODE_OF[a.dtype.name]) + _enc_field(2, 2, shape)
                     + b"".join(_enc_field(f, 0, v) for f, v in ints if v) + _enc_field(6, 5, _mask(crc32c(raw))))
            sizes[shard] += len(raw)
            items.append((name.encode("utf-8"), entry))
    finally:
        for f in files:
            f.close()
    _write_table(prefix + ".index", items, block_size, restart_interval, compression)


def _write_table(path, items, block_size=4096, restart_interval=16, compression="none"):
    """An SSTable of the sorted (key, value) items: data blocks of about block_size
    bytes, an empty metaindex, an index (each block's last key -> handle), footer."""
    out, index, pending, size = bytearray(), [], [], 0
    for n, (key, value) in enumerate(items):
        pending.append((key, value))
        size += len(key) + len(value) + 3
        if size >= block_size or n == len(items) - 1:
            index.append((key, _put_block(out, _block(pending, restart_interval), compression)))
            pending, size = [], 0
    meta = _put_block(out, _block([], 1), compression)
    footer = meta + _put_block(out, _block(index, 1), compression)
    out += footer + bytes(40 - len(footer)) + struct.pack("<Q", _MAGIC)
    with open(path, "wb") as f:
        f.write(out)
