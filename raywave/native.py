"""Native kernels: C/C++ sources compiled by the system compiler into plain shared libraries, loaded with ctypes.

No torch headers, no ninja, no Python extension module: a source file plus flags becomes `lib<name>-<key>.so`
under the raywave cache directory ($RAYWAVE_CACHE, else $XDG_CACHE_HOME/raywave, else ~/.cache/raywave), in its
`native/` folder. The key hashes everything the binary depends on (source text, compiler path and version,
flags, and the CPU's model and feature flags, because of -march=native), so a changed source, compiler or
machine gets a new build and an unchanged one is loaded in milliseconds.

Builds are atomic and race-free: a file lock per key (two Ray workers asking at once build once; the second
waits and loads), the compiler writes a temporary file in the same folder, and `os.replace` publishes it.

    lib = native.load(Path(__file__).with_name("kernel.cpp"), "mykernel")     # ctypes.CDLL, built if needed
    native.find_compiler()        # Toolchain(path, version) or None ($CXX, else g++, c++, clang++)

A missing compiler raises `NativeUnavailable` (one line saying so); a failing build raises it with the
compiler's first error lines. Callers decide whether to fall back.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raywave.errors import RaywaveError

#: Flags of every build unless the caller passes its own: optimised for this CPU, OpenMP, IEEE arithmetic kept
#: (no -ffast-math: values round as written; -fno-math-errno and -fno-trapping-math only give up errno and FP
#: exception flags, which lets sqrt and branch-free selects vectorise), a position-independent shared library.
DEFAULT_FLAGS: tuple[str, ...] = (
    "-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC",
)  # fmt: skip
COMPILERS: tuple[str, ...] = ("g++", "c++", "clang++")
BUILD_TIMEOUT_S = 300


class NativeUnavailable(RaywaveError):
    """No compiler, or the build failed: the message is one line naming the cause."""


@dataclass(frozen=True)
class Toolchain:
    path: str
    version: str  # first line of `<compiler> --version`


@dataclass(frozen=True)
class Build:
    path: Path
    built: bool  # False: loaded from the cache
    seconds: float  # compile time (0 when cached)


def cache_dir() -> Path:
    """Cache root: $RAYWAVE_CACHE, else $XDG_CACHE_HOME/raywave, else ~/.cache/raywave."""
    if os.environ.get("RAYWAVE_CACHE"):
        return Path(os.environ["RAYWAVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raywave"


@functools.lru_cache(maxsize=8)
def _probe(path: str) -> Toolchain | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return Toolchain(path, (out.stdout.splitlines() or ["unknown"])[0].strip())


def find_compiler() -> Toolchain | None:
    """$CXX if set (and working), else the first working one of g++, c++, clang++ on PATH; None if none."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else list(COMPILERS)
    for name in names:
        path = shutil.which(name)
        tc = _probe(path) if path else None
        if tc:
            return tc
    return None


@functools.lru_cache(maxsize=1)
def cpu_identity() -> str:
    """Machine, CPU model and feature flags (what -march=native compiles for)."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key == "model name" and not model:
                    model = line.split(":", 1)[1].strip()
                elif key in ("flags", "Features") and not flags:
                    flags = line.split(":", 1)[1].strip()
                if model and flags:
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{flags}"


def build_key(source_text: str, toolchain: Toolchain, flags: Sequence[str]) -> str:
    """Hash of everything the binary depends on (16 hex digits)."""
    parts = [source_text, toolchain.path, toolchain.version, " ".join(flags), cpu_identity()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build(
    source: str | os.PathLike,
    name: str,
    flags: Sequence[str] = DEFAULT_FLAGS,
    libs: Sequence[str] = ("-lm",),
    cache: str | os.PathLike | None = None,
) -> Build:
    """Compile `source` into `<cache>/native/lib<name>-<key>.so` unless that file exists; return where it is."""
    from filelock import FileLock

    toolchain = find_compiler()
    if toolchain is None:
        tried = os.environ.get("CXX") or ", ".join(COMPILERS)
        raise NativeUnavailable(f"no C++ compiler found (tried {tried}); install g++ or set CXX")
    source = Path(source)
    text = source.read_text()
    key = build_key(text + "\0" + " ".join(libs), toolchain, flags)
    folder = Path(cache) if cache is not None else cache_dir()
    folder = folder / "native"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"lib{name}-{key}.so"
    if target.exists():
        return Build(target, False, 0.0)
    with FileLock(str(folder / f".lib{name}-{key}.lock")):
        if target.exists():  # another process built it while we waited
            return Build(target, False, 0.0)
        fd, tmp = tempfile.mkstemp(prefix=f".lib{name}-{key}.", suffix=".so.tmp", dir=folder)
        os.close(fd)
        t0 = time.perf_counter()
        try:
            cmd = [toolchain.path, *flags, str(source), "-o", tmp, *libs]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise NativeUnavailable(f"compiling {source.name} took over {BUILD_TIMEOUT_S} s; gave up") from None
            if out.returncode != 0:
                first = " | ".join((out.stderr.strip().splitlines() or ["no output"])[:3])
                raise NativeUnavailable(f"compiling {source.name} with {toolchain.path} failed: {first}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return Build(target, True, time.perf_counter() - t0)


def load(
    source: str | os.PathLike,
    name: str,
    flags: Sequence[str] = DEFAULT_FLAGS,
    libs: Sequence[str] = ("-lm",),
    cache: str | os.PathLike | None = None,
) -> tuple[ctypes.CDLL, Build]:
    """`build`, then load the library (ctypes releases the GIL during each call)."""
    b = build(source, name, flags, libs, cache)
    try:
        return ctypes.CDLL(str(b.path)), b
    except OSError as e:
        raise NativeUnavailable(f"cannot load {b.path}: {e}; delete it to rebuild") from None
