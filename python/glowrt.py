"""glowrt from Python: Glow-family normalizing flows on CPUs (ctypes over libglowrt.so).

    import glowrt
    with glowrt.Model("models/fmnist.glow") as m:
        s = glowrt.Session(m, batch=16)
        x = glowrt.pixels_to_model(u, m.n_bits)      # uint8 [N, H, W(, C)] -> float32 [N, C, H, W]
        log_p = s.log_prob(x)                        # float64 [N], nats
        eps, log_p = s.encode(x)                     # float32 [N, D], float64 [N]
        u2 = glowrt.model_to_pixels(s.sample(8, temperature=0.7, seed=1), m.n_bits)

The calls run the same C code as the glowrt CLI, so they give the same bits.
Images in model space are float32 [N, C, H, W] in [-0.5, 0.5]; any array-like
of floats is accepted (converted to C-contiguous float32) and checked: a wrong
shape or dtype, or a non-finite value, raises ValueError; a failure in the
library (unreadable model, overflow, its own allocations failing) raises
glowrt.Error with its one-line message; numpy's MemoryError is left as it is
for the arrays this module allocates (sample(2**31), say). Batches larger than
a session's are run in session-sized pieces.

The library: $GLOWRT_LIB if set, else libglowrt.so in ../build/ then the other
../build*/ directories (newest first) beside this file, else the system
loader. Unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, loading it sets
GOMP_SPINCOUNT=1000 as the CLI does (OpenMP threads spin briefly, then sleep);
libgomp reads it only if nothing loaded it before (torch does).

Threads: a Model is immutable and may be shared by sessions in any threads.
A Session owns scratch memory for one batch and image size and is for one
thread at a time (include/glowrt.h): calls on one session from several threads
are serialised by a lock; to run in parallel use one session per thread (with
`threads` set so that they do not oversubscribe the cores). ctypes releases
the GIL during each call. libgomp does not survive fork(): a forked child
that computes after its parent has hangs, so worker processes should use
multiprocessing's 'spawn' or 'forkserver' start method.
"""
import contextlib
import ctypes
import glob
import os
import sys
import threading
import weakref

import numpy as np

__version__ = "0.1.0"
__all__ = ["Error", "Model", "Session", "pixels_to_model", "model_to_pixels", "isa", "library_path"]

_ERR_LEN = 512  # GLOWRT_ERR_LEN
_c_int, _c_i64, _c_u64, _c_dbl, _c_flt, _vp = (ctypes.c_int, ctypes.c_int64, ctypes.c_uint64, ctypes.c_double,
                                               ctypes.c_float, ctypes.c_void_p)
_f32p, _f64p = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_double)
_u8p = ctypes.POINTER(ctypes.c_uint8)


class Error(RuntimeError):
    """A failure reported by libglowrt (or in finding it); str() is its one-line message."""


class _Info(ctypes.Structure):
    _fields_ = [("in_channels", _c_int), ("height", _c_int), ("width", _c_int), ("n_bits", _c_int),
                ("n_levels", _c_int), ("n_steps", _c_int), ("n_params", _c_i64)]


_PROTOTYPES = {
    "glowrt_model_load": (_c_int, [ctypes.c_char_p, ctypes.POINTER(_vp), ctypes.c_char_p]),
    "glowrt_model_free": (None, [_vp]),
    "glowrt_model_verify": (_c_int, [_vp, ctypes.c_char_p]),
    "glowrt_model_info": (None, [_vp, ctypes.POINTER(_Info)]),
    "glowrt_dim": (_c_i64, [_vp, _c_int, _c_int]),
    "glowrt_check_size": (_c_int, [_vp, _c_int, _c_int, ctypes.c_char_p]),
    "glowrt_session_create": (_c_int, [_vp, _c_int, _c_int, _c_int, _c_int, ctypes.POINTER(_vp), ctypes.c_char_p]),
    "glowrt_session_free": (None, [_vp]),
    "glowrt_log_prob": (_c_int, [_vp, _f32p, _c_int, _f64p, ctypes.c_char_p]),
    "glowrt_encode": (_c_int, [_vp, _f32p, _c_int, _f32p, _f64p, ctypes.c_char_p]),
    "glowrt_decode": (_c_int, [_vp, _f32p, _c_int, _f32p, ctypes.c_char_p]),
    "glowrt_sample": (_c_int, [_vp, _c_u64, _c_u64, _c_int, _c_flt, _f32p, ctypes.c_char_p]),
    "glowrt_bpd": (_c_dbl, [_c_dbl, _c_i64, _c_int]),
    "glowrt_isa": (ctypes.c_char_p, []),
    "glowrt_pixels_to_model": (_c_int, [_u8p, _c_i64, _c_i64, _c_i64, _c_int, _c_int, _c_int, _f32p, ctypes.c_char_p]),
    "glowrt_model_to_pixels": (_c_int, [_f32p, _c_i64, _c_int, _c_i64, _c_i64, _c_int, _u8p, ctypes.c_char_p]),
}
_lib = None
_lib_path = None
_lib_lock = threading.Lock()


def _candidates():
    env = os.environ.get("GLOWRT_LIB")
    if env:
        return [env]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = [p for p in glob.glob(os.path.join(root, "build*", "libglowrt.so")) if os.path.isfile(p)]
    found.sort(key=lambda p: (os.path.basename(os.path.dirname(p)) != "build", -os.path.getmtime(p)))
    return found + ["libglowrt.so"]


def _elf_machine(head):
    """The machine of an ELF header: 'x86-64', 'aarch64', 'e_machine N', or None if not ELF."""
    if head[:4] != b"\x7fELF" or len(head) < 20:
        return None
    m = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return {62: "x86-64", 183: "aarch64", 3: "x86", 40: "arm"}.get(m, "e_machine %d" % m)


def _unloadable(data):
    """Why a library file cannot load here, where dlopen would say less (or end the process)."""
    if b"__asan_init" in data:
        return "built with AddressSanitizer (it cannot load into an uninstrumented Python)"
    theirs = _elf_machine(data[:20])
    if theirs is None:
        return "not an ELF file"
    try:
        with open(sys.executable, "rb") as f:
            mine = _elf_machine(f.read(20))
    except OSError:
        return None
    return "built for %s, not %s" % (theirs, mine) if mine and theirs != mine else None


def _load():
    """The loaded library (found and loaded on first use); raises Error if none loads."""
    global _lib, _lib_path
    with _lib_lock:
        if _lib is not None:
            return _lib
        if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
            os.environ["GOMP_SPINCOUNT"] = "1000"  # read by libgomp when it is loaded
        why = []
        for path in _candidates():
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    data = f.read()
                bad = _unloadable(data)
                if bad:
                    why.append("%s: %s" % (path, bad))
                    continue
            try:
                lib = ctypes.CDLL(path)
                for name, (res, args) in _PROTOTYPES.items():
                    fn = getattr(lib, name)
                    fn.restype, fn.argtypes = res, args
            except (OSError, AttributeError) as e:
                why.append(str(e).splitlines()[0] if str(e) else path)
                continue
            _lib, _lib_path = lib, path
            return lib
        raise Error("cannot load libglowrt.so (set GLOWRT_LIB or build it: cmake --build build): " + "; ".join(why))


def library_path():
    """The path of the libglowrt.so in use (loading it if need be)."""
    _load()
    return _lib_path


def isa():
    """The flow kernel set in use ('ref', 'avx2', 'neon'), or why none can run."""
    return _load().glowrt_isa().decode()


def _call(fn, *args):
    """Calls a C function whose last argument is the err buffer; a failure raises Error(message)."""
    err = ctypes.create_string_buffer(_ERR_LEN)
    if fn(*args, err):
        raise Error(err.value.decode("utf-8", "replace") or "%s failed" % fn.__name__)


def _int(name, v, lo, hi):
    """v as an int in [lo, hi], or ValueError naming it (a bool is not an integer here)."""
    try:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError
        i = int(v)
        if i != v:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        raise ValueError("%s: %r is not an integer" % (name, v)) from None
    if not lo <= i <= hi:
        raise ValueError("%s: %d is out of range (%d..%d)" % (name, i, lo, hi))
    return i


def _floats(name, a, shape, what, hint=""):
    """a as C-contiguous float32 of shape (N,) + shape, checked: ValueError on a wrong dtype, shape or a non-finite value."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise ValueError("%s: dtype %s, expected floating point%s" % (name, a.dtype, hint))
    if a.ndim != len(shape) + 1 or a.shape[1:] != tuple(shape):
        want = "[N, " + ", ".join(str(d) for d in shape) + "]"
        raise ValueError("%s: shape %s, expected %s%s" % (name, list(a.shape), want,
                         " (a batch: x[None] for one)" if a.ndim == len(shape) else ""))
    with np.errstate(over="ignore"):
        a = np.ascontiguousarray(a, dtype=np.float32)
    ok = np.isfinite(a).reshape(len(a), int(np.prod(shape))).all(axis=1)
    if not ok.all():
        raise ValueError("%s: %s %d holds a non-finite value (in float32)" % (name, what, int(np.argmin(ok))))
    return a


class Model:
    """A .glow model, loaded (mmap'ed, validated) by glowrt_model_load; verify=True also checks
    every tensor's CRC and that it is finite. Attributes: path, in_channels, height, width (the
    default image size), n_levels, n_bits, n_steps, n_params, dim (= C*H*W at the default size).
    Freed by close(), at the end of a with block, or when garbage-collected; close() also closes
    the model's sessions."""

    def __init__(self, path, verify=False):
        lib = _load()
        self.path = os.fspath(path)
        h = _vp()
        _call(lib.glowrt_model_load, os.fsencode(self.path), ctypes.byref(h))
        self._h = h
        # calls inside the C library on this model (verify, dim_at, session creation) in any thread:
        # close() waits for them to leave before it frees the model, and refuses new ones
        self._cv, self._users = threading.Condition(), [0]
        self._fin = weakref.finalize(self, _free_model, lib, h, self._cv, self._users)
        self._sessions = weakref.WeakSet()
        if verify:
            try:
                self.verify()
            except Error:
                self.close()
                raise
        info = _Info()
        lib.glowrt_model_info(h, ctypes.byref(info))
        for k, _ in _Info._fields_:
            setattr(self, k, int(getattr(info, k)))
        self.dim = self.dim_at(self.height, self.width)

    @contextlib.contextmanager
    def _using(self):
        """The model's handle for a call into the library; close() waits until the call is over."""
        with self._cv:
            if not self._fin.alive:
                raise ValueError("model %s is closed" % self.path)
            self._users[0] += 1
        try:
            yield self._h
        finally:
            with self._cv:
                self._users[0] -= 1
                self._cv.notify_all()

    def verify(self):
        """Checks every tensor's CRC and that its values are finite (glowrt_model_verify); raises Error if not."""
        with self._using() as h:
            _call(_lib.glowrt_model_verify, h)

    def dim_at(self, height, width):
        """Latent dimensions C*H*W at image size height x width; ValueError or Error (as Session)
        for a size the model cannot run."""
        height, width = _int("height", height, 1, (1 << 31) - 1), _int("width", width, 1, (1 << 31) - 1)
        with self._using() as h:
            _call(_lib.glowrt_check_size, h, height, width)
            return int(_lib.glowrt_dim(h, height, width))

    def close(self):
        """Frees the model and closes its sessions (idempotent). Waits for calls on the model in
        other threads (verify, a session being created, a session's call) to finish."""
        with self._cv:
            if not self._fin.alive:
                return
            self._cv.wait_for(lambda: self._users[0] == 0)
            for s in list(self._sessions):
                s.close()
            self._fin()

    @property
    def info(self):
        """The model's description as a dict (in_channels, height, width, n_bits, n_levels, n_steps, n_params, dim)."""
        return {k: getattr(self, k) for k in [f for f, _ in _Info._fields_] + ["dim"]}

    @property
    def closed(self):
        """True once close() has run."""
        return not self._fin.alive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "glowrt.Model(%r, C=%d, %dx%d, levels=%d, n_bits=%d%s)" % (
            self.path, self.in_channels, self.height, self.width, self.n_levels, self.n_bits,
            ", closed" if self.closed else "")


def _free_model(lib, h, cv, users):
    """The model's finalizer (close(), GC, interpreter exit): after the calls on it in other threads."""
    with cv:
        cv.wait_for(lambda: users[0] == 0)
        lib.glowrt_model_free(h)


def _free_session(lib, h, lock, model):  # holds the model until the session is freed
    """The session's finalizer (close(), GC, interpreter exit, where a daemon thread may be inside a
    call): after the call in progress."""
    with lock:
        lib.glowrt_session_free(h)


class Session:
    """Scratch memory and convolution primitives for up to `batch` images of height x width
    (default: the model's size) on `threads` threads (0: all cores), by glowrt_session_create.
    Results are bit-identical whatever batch and threads. Attributes: model, batch, threads,
    height, width, channels, dim. Keeps its model alive; freed by close(), a with block or GC.
    One thread at a time (calls from several threads are serialised)."""

    def __init__(self, model, batch=16, threads=0, height=None, width=None):
        if not isinstance(model, Model):
            raise TypeError("model: expected a glowrt.Model, got %s" % type(model).__name__)
        self.model, self.channels = model, model.in_channels
        self.batch = _int("batch", batch, 1, 1 << 20)
        self.threads = _int("threads", threads, -(1 << 31), (1 << 31) - 1)
        self.height = model.height if height is None else _int("height", height, 1, 16384)
        self.width = model.width if width is None else _int("width", width, 1, 16384)
        with model._using() as mh:  # model.close() in another thread waits for this
            h = _vp()
            _call(_lib.glowrt_session_create, mh, self.batch, self.height, self.width, self.threads, ctypes.byref(h))
            self._h, self._lock = h, threading.Lock()
            self._fin = weakref.finalize(self, _free_session, _lib, h, self._lock, model)
            model._sessions.add(self)
            self.dim = int(_lib.glowrt_dim(mh, self.height, self.width))
        self.shape = (self.channels, self.height, self.width)

    def close(self):
        """Frees the session (idempotent) once a call in progress in another thread is over;
        later calls raise ValueError."""
        self._fin()  # _free_session takes the lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _images(self, x):
        return _floats("x", x, self.shape, "image", " (model-space images; pixels go through glowrt.pixels_to_model)")

    def _pieces(self, n, fn):
        """fn(handle, lo, hi) for each session-sized piece of n items, under the lock; a C error names the piece."""
        with self._lock:
            if not self._fin.alive:
                raise ValueError("session is closed")
            for lo in range(0, n, self.batch):
                hi = min(n, lo + self.batch)
                try:
                    fn(self._h, lo, hi)
                except Error as e:
                    raise Error(str(e) if n <= self.batch else "batch of items %d..%d: %s" % (lo, hi - 1, e)) from None

    def log_prob(self, x):
        """log p(x) in nats for images x [N, C, H, W] in model space: float64 [N] (glowrt_log_prob).
        -inf or NaN where float32 overflows (inputs far outside [-0.5, 0.5])."""
        x = self._images(x)
        lp = np.empty(len(x), np.float64)
        self._pieces(len(x), lambda h, lo, hi: _call(
            _lib.glowrt_log_prob, h, x[lo:hi].ctypes.data_as(_f32p), hi - lo, lp[lo:hi].ctypes.data_as(_f64p)))
        return lp

    def bpd(self, x):
        """Bits per dimension of the discrete images x [N, C, H, W]: float64 [N] (glowrt_bpd of log_prob)."""
        return np.array([_lib.glowrt_bpd(float(v), self.dim, self.model.n_bits) for v in self.log_prob(x)],
                        np.float64)

    def encode(self, x):
        """Images x [N, C, H, W] -> (eps float32 [N, D], log_p float64 [N]) (glowrt_encode): the
        standardised latents, finest level first. Error if some eps overflows float32."""
        x = self._images(x)
        eps, lp = np.empty((len(x), self.dim), np.float32), np.empty(len(x), np.float64)
        self._pieces(len(x), lambda h, lo, hi: _call(
            _lib.glowrt_encode, h, x[lo:hi].ctypes.data_as(_f32p), hi - lo, eps[lo:hi].ctypes.data_as(_f32p),
            lp[lo:hi].ctypes.data_as(_f64p)))
        return eps, lp

    def decode(self, eps):
        """Latents eps [N, D] -> images float32 [N, C, H, W] (glowrt_decode), the exact inverse of
        encode. Error if some output overflows float32 (latents far from N(0, 1))."""
        eps = _floats("eps", eps, (self.dim,), "row")
        x = np.empty((len(eps),) + self.shape, np.float32)
        self._pieces(len(eps), lambda h, lo, hi: _call(
            _lib.glowrt_decode, h, eps[lo:hi].ctypes.data_as(_f32p), hi - lo, x[lo:hi].ctypes.data_as(_f32p)))
        return x

    def sample(self, n, temperature=0.7, seed=0, first_index=0):
        """n samples float32 [n, C, H, W] at `temperature` (0..10, scaling eps) (glowrt_sample):
        row k is sample first_index + k of the stream keyed by seed, whatever batch or threads."""
        n = _int("n", n, 0, (1 << 31) - 1)
        seed = _int("seed", seed, 0, (1 << 64) - 1)
        first = _int("first_index", first_index, 0, (1 << 64) - max(n, 1))  # the last index is 2^64 - 1
        try:
            t = float(temperature)
        except (TypeError, ValueError):
            raise ValueError("temperature: %r is not a number" % (temperature,)) from None
        if not 0.0 <= t <= 10.0:
            raise ValueError("temperature: %r is out of range [0, 10]" % (temperature,))
        x = np.empty((n,) + self.shape, np.float32)
        self._pieces(n, lambda h, lo, hi: _call(
            _lib.glowrt_sample, h, seed, first + lo, hi - lo, t, x[lo:hi].ctypes.data_as(_f32p)))
        return x

    def __repr__(self):
        return "glowrt.Session(batch=%d, threads=%d, %dx%d%s)" % (
            self.batch, self.threads, self.height, self.width, "" if self._fin.alive else ", closed")


def pixels_to_model(u, n_bits, channels=None):
    """uint8 pixels [N, H, W] (grey) or [N, H, W, C] (C = 1, 3, or 4 with alpha ignored) -> float32
    [N, channels, H, W] in model space, as the CLI maps pixels: x = floor(u / 2^(8-n_bits)) / 2^n_bits
    - 0.5 + 0.5 / 2^n_bits. channels (1 or 3; default 1 for grey input, else 3) converts like the
    CLI: RGB to grey by BT.601 luma (libjpeg's fixed point), grey to RGB by repeating."""
    u = np.asarray(u)
    if u.dtype != np.uint8:
        raise ValueError("pixels: dtype %s, expected uint8" % u.dtype)
    if u.ndim == 3:
        u = u[..., None]
    elif not (u.ndim == 4 and u.shape[3] in (1, 3, 4)):
        raise ValueError("pixels: shape %s, expected [N, H, W] or [N, H, W, C] with C in {1, 3, 4}" % list(u.shape))
    n_bits = _int("n_bits", n_bits, 1, 8)
    cin = u.shape[3]
    c = (1 if cin == 1 else 3) if channels is None else _int("channels", channels, 1, 3)
    if c not in (1, 3):
        raise ValueError("channels: %r, expected 1 or 3" % (channels,))
    u = np.ascontiguousarray(u)
    n, h, w = u.shape[:3]
    x = np.empty((n, c, h, w), np.float32)
    if x.size:  # the CLI's own map (libglowrt), not a copy of it
        _call(_load().glowrt_pixels_to_model, u.ctypes.data_as(_u8p), n, h, w, cin, c, n_bits, x.ctypes.data_as(_f32p))
    return x


def model_to_pixels(x, n_bits):
    """float images [N, C, H, W] in model space -> uint8 pixels [N, H, W, C], as the CLI writes
    images: floor((x + 0.5) 2^n_bits) * 2^(8-n_bits), clamped to 0..255 (NaN -> 0)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError("x: dtype %s, expected floating point" % x.dtype)
    if x.ndim != 4:
        raise ValueError("x: shape %s, expected [N, C, H, W]" % list(x.shape))
    n_bits = _int("n_bits", n_bits, 1, 8)
    with np.errstate(over="ignore"):  # beyond float32: inf, which maps to 255 as in the CLI
        x = np.ascontiguousarray(x, dtype=np.float32)
    n, c, h, w = x.shape
    u = np.empty((n, h, w, c), np.uint8)
    if x.size:
        _call(_load().glowrt_model_to_pixels, x.ctypes.data_as(_f32p), n, c, h, w, n_bits, u.ctypes.data_as(_u8p))
    return u
