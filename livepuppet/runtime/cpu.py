"""What this processor offers: its name, its SIMD and matrix units, and the precision each engine should use.

One place reads ``/proc/cpuinfo`` (or the platform elsewhere); ``bench``,
``doctor``, ``export`` and the engines ask here. Tests force the other side of
every choice with :func:`forced`, so a bf16 machine tests the fp32 path and
the other way round.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

REPORTED_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                  "amx_int8")
# oneDNN's ONEDNN_MAX_CPU_ISA levels, lowest first, with the /proc/cpuinfo flags each level adds: a cap set
# in the environment hides the flags of every level above it, so livepuppet chooses what oneDNN will run.
ISA_LEVELS = (("SSE41", ()), ("AVX", ()), ("AVX2", ("avx2", "fma")), ("AVX2_VNNI", ("avx_vnni",)),
              ("AVX2_VNNI_2", ()), ("AVX512_CORE", ("avx512f",)), ("AVX512_CORE_VNNI", ("avx512_vnni",)),
              ("AVX512_CORE_BF16", ("avx512_bf16",)), ("AVX512_CORE_FP16", ("avx512_fp16",)),
              ("AVX10_1_512", ()), ("AVX512_CORE_AMX", ("amx_tile", "amx_bf16", "amx_int8")),
              ("AVX10_1_512_AMX", ()), ("AVX512_CORE_AMX_FP16", ("amx_fp16",)), ("AVX10_1_512_AMX_FP16", ()))
ISA_ENV = "ONEDNN_MAX_CPU_ISA"


@dataclass(frozen=True)
class CPU:
    name: str
    arch: str  # platform.machine(): x86_64, aarch64, arm64...
    flags: frozenset[str]

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "x86")

    @property
    def is_arm(self) -> bool:
        return self.arch.lower() in ("aarch64", "arm64") or self.arch.lower().startswith("arm")

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags or "amx_tile" in self.flags

    @property
    def bf16(self) -> bool:
        """Native bfloat16 arithmetic: AMX tiles or AVX512-BF16 dot products."""
        return self.amx or "avx512_bf16" in self.flags

    @property
    def matrix_unit(self) -> str:
        """The unit bf16 runs on, as said to users: 'AMX', 'AVX512-BF16', or '' where there is none."""
        return "AMX" if self.amx else "AVX512-BF16" if "avx512_bf16" in self.flags else ""

    @property
    def int8(self) -> str:
        """The unit int8 dot products run on, as said to users: 'AMX-INT8', 'AVX512-VNNI', 'AVX-VNNI', or ''."""
        return next((unit for flag, unit in INT8_UNITS if flag in self.flags), "")

    @property
    def simd(self) -> str | None:
        return " ".join(f for f in REPORTED_FLAGS if f in self.flags) or None

    def fast_precision(self) -> str:
        """The reduced precision OpenVINO should run at on this CPU: bf16 where native, fp16 on ARM, else fp32."""
        if self.is_x86:
            return "bf16" if self.bf16 else "fp32"
        return "fp16" if self.is_arm else "fp32"

    @property
    def fingerprint(self) -> str:
        """What makes timings from one machine valid on another: the CPU, its units and the cores usable."""
        return f"{self.name}|{self.arch}|{self.simd}|{usable_cores()}"


INT8_UNITS = (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"))
_forced: CPU | None = None


@lru_cache(maxsize=1)
def _read() -> CPU:
    name, flags = None, ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name is None:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = value
    except OSError:
        pass
    return CPU(name or platform.processor() or platform.machine(), platform.machine(),
               frozenset(flags.split()) - hidden_by_isa_cap(os.environ.get(ISA_ENV, "")))


def hidden_by_isa_cap(cap: str) -> frozenset[str]:
    """The flags oneDNN will not use under ``ONEDNN_MAX_CPU_ISA=cap`` (none for ALL, unset or unknown)."""
    names = [name for name, _ in ISA_LEVELS]
    if cap.upper() not in names:
        return frozenset()
    return frozenset(f for _, flags in ISA_LEVELS[names.index(cap.upper()) + 1:] for f in flags)


def current() -> CPU:
    """This machine's CPU, or the one a test forced."""
    return _forced or _read()


@contextlib.contextmanager
def forced(cpu: CPU) -> Iterator[CPU]:
    """Make :func:`current` answer ``cpu`` meanwhile (tests: the other side of each CPU-dependent choice)."""
    global _forced
    saved, _forced = _forced, cpu
    try:
        yield cpu
    finally:
        _forced = saved


def without(*flags: str) -> CPU:
    """This CPU less ``flags``: e.g. ``without('avx512_bf16', 'amx_tile', 'amx_bf16')`` is an fp32-only x86."""
    cpu = _read()
    return CPU(cpu.name, cpu.arch, cpu.flags - set(flags))


def with_flags(*flags: str) -> CPU:
    cpu = _read()
    return CPU(cpu.name, cpu.arch, cpu.flags | set(flags))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
