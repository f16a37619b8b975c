"""Snapdragon 865 … 8 Gen 3: TVM target configs and roofline facts, all driven by one table (`PRESETS`).

Why one table: the CPU target (``mcpu``/``mattr``/``num-cores``), the Adreno targets (whose ``host`` is that CPU
target) and the roofline peaks are all derived from the same cluster/GPU/memory facts, so they cannot drift apart.

Conventions
* CPU peaks and ``num-cores`` count the prime + big cores only: TVM's thread pool should run there, and the little
  cores would only slow down a statically partitioned parallel loop.
* CPU peak = sum over big cores of ``GHz x 128-bit FMA pipes x 4 fp32 lanes x 2 FLOP`` (pipe counts: Arm Software
  Optimization Guides, SWOG). fp16 packs 8 lanes (2x). int8 uses SDOT (4 MACs per 32-bit lane: 4x fp32); cores with
  i8mm get SMMLA (2x SDOT's MACs per instruction at, per the SWOGs, the same issue rate: 8x fp32). **Estimates.**
* GPU peaks are **estimates**: Qualcomm publishes neither ALU counts nor FLOPS for Adreno. See `_ADRENO_FP32_GFLOPS`.
* Memory bandwidth is the theoretical LPDDR peak of the 64-bit (4 x 16-bit) bus, shared by CPU and GPU. Measured
  numbers are ~2/3 of it (34-35 of 51.2 GB/s on a Snapdragon 888 phone, github.com/azhirnov/as-en; a touch below
  30 of 34.1 GB/s on the 855, Chips and Cheese).
* Dtype keys are TVM dtype strings (``"float32"``, ``"float16"``, ``"int8"``); int8 values are GOPS.
"""

from __future__ import annotations

from dataclasses import dataclass

ANDROID_TRIPLE = "aarch64-linux-android"
LINUX_TRIPLE = "aarch64-linux-gnu"  # the qemu-emulated aarch64 Linux device
DTYPES = ("float32", "float16", "int8")
UNITS = ("cpu", "gpu")

_NEON = ("+neon", "+dotprod", "+fullfp16")  # ARMv8.2 cores: /proc/cpuinfo shows asimddp, fphp, asimdhp
# ARMv9 Snapdragons expose i8mm but (mostly) not SVE to Android: /proc/cpuinfo of 8 Gen 1/2/3 phones lists i8mm and
# no sve (github.com/hrw/arm-socs-table issues 88, 90, 98; only Samsung's 8 Gen 1 kernel, issue 89, lists sve).
# LLVM's cortex-x2/x3/x4 imply +sve/+sve2, so TVM would set has_sve and LLVM may emit SVE -> SIGILL on the phone
# (llama.cpp issue 402, PR 10906). Hence "-sve,-sve2".
_NEON_V9 = (*_NEON, "+i8mm", "-sve", "-sve2")

# Adreno runs fp16 at twice the fp32 rate (as-en: 3244 vs 1622 GFLOPS on Adreno 660; cpu-gpu-arch: 6.14 vs 3.07
# TFLOPS on Adreno 750). No int8 rate is published: we assume the fp16 rate (packed 16-bit integer ops; Chips and
# Cheese measured int8 no faster than int16 on Adreno 640). Adreno 660+'s mixed-precision dot products may beat it.
_GPU_FP16_PER_FP32 = 2.0
_GPU_INT8_PER_FP32 = 2.0


@dataclass(frozen=True)
class Roofline:
    """Peak compute per dtype (GFLOPS; GOPS for int8) and memory bandwidth (GB/s) of one unit."""

    peak_gflops: dict[str, float]
    bandwidth_gbs: float

    def ridge_point(self, dtype: str = "float32") -> float:
        """Arithmetic intensity (FLOP/byte) above which a kernel is compute-bound."""
        return self.peak_gflops[dtype] / self.bandwidth_gbs

    def attainable_gflops(self, intensity: float, dtype: str = "float32") -> float:
        """Roofline bound for a kernel with ``intensity`` FLOP per DRAM byte."""
        return min(self.peak_gflops[dtype], self.bandwidth_gbs * intensity)


@dataclass(frozen=True)
class Cluster:
    """``count`` identical cores at one maximum clock."""

    count: int
    core: str  # Arm core, spelled as LLVM's -mcpu spells it
    ghz: float
    simd_pipes: int = 0  # 128-bit FMA-capable ASIMD pipes per core (SWOG); 0 = not modelled (little cores)


@dataclass(frozen=True)
class CpuFacts:
    """Cluster layout and ISA extensions of the Kryo CPU."""

    big: tuple[Cluster, ...]  # prime cluster first; these are ``num-cores`` and the peak
    little: Cluster  # efficiency cores: documented, not targeted
    mattr: tuple[str, ...]

    @property
    def mcpu(self) -> str:
        """The prime core: LLVM schedules for it (the big cores are the same or a narrower sibling)."""
        return self.big[0].core

    @property
    def num_cores(self) -> int:
        return sum(c.count for c in self.big)

    def peak_gflops(self) -> dict[str, float]:
        fp32 = sum(c.count * c.ghz * c.simd_pipes * 4 * 2 for c in self.big)
        int8_per_fp32 = 8.0 if "+i8mm" in self.mattr else 4.0
        return {"float32": fp32, "float16": 2.0 * fp32, "int8": int8_per_fp32 * fp32}


@dataclass(frozen=True)
class GpuFacts:
    """The Adreno GPU (name, max clock) and its estimated fp32 peak."""

    name: str
    mhz: int
    fp32_gflops: float  # estimate, see _ADRENO_FP32_GFLOPS

    @property
    def model(self) -> str:
        return self.name.lower().replace(" ", "")

    def peak_gflops(self) -> dict[str, float]:
        return {"float32": self.fp32_gflops, "float16": _GPU_FP16_PER_FP32 * self.fp32_gflops,
                "int8": _GPU_INT8_PER_FP32 * self.fp32_gflops}


@dataclass(frozen=True)
class SnapdragonPreset:
    """One SoC: its facts, its TVM target configs and its rooflines."""

    soc: str  # table key: "865", "888", "8gen1", "8gen2", "8gen3"
    name: str
    part: str  # Qualcomm part number
    cpu: CpuFacts
    gpu: GpuFacts
    memory: str  # LPDDR generation
    mts: int  # LPDDR transfer rate (MT/s) on a 64-bit bus

    @property
    def bandwidth_gbs(self) -> float:
        return self.mts * 64 / 8 / 1000

    @property
    def model(self) -> str:
        """TVM ``model`` attribute, in the style of TVM's own ``arm/pixel2`` tag ("snapdragon835")."""
        return "snapdragon" + self.soc

    def roofline(self, unit: str) -> Roofline:
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}; valid units: {', '.join(UNITS)}")
        peaks = self.cpu.peak_gflops() if unit == "cpu" else self.gpu.peak_gflops()
        return Roofline({dtype: round(peak, 1) for dtype, peak in peaks.items()}, round(self.bandwidth_gbs, 1))

    def cpu_config(self, tag: str, triple: str = ANDROID_TRIPLE) -> dict:
        """LLVM target config for the big cores; ``tag`` only labels the target (``target.tag``)."""
        return {"kind": "llvm", "tag": tag, "model": self.model, "mtriple": triple, "mcpu": self.cpu.mcpu,
                "mattr": list(self.cpu.mattr), "num-cores": self.cpu.num_cores}

    def adreno_config(self, tag: str, base: dict, host: dict) -> dict:
        """OpenCL target config: TVM's Adreno tag ``base`` (exported), this GPU's model, and ``host``."""
        return {**base, "tag": tag, "model": self.gpu.model, "host": host}


# Adreno fp32 peaks (GFLOPS) = FP32 lanes x 2 FLOP (FMA) x max clock. ESTIMATES: Qualcomm publishes neither ALU counts
# nor FLOPS for phone Adrenos, so each number is checked against a second, independent route.
# * 650 (865): 1024 lanes x 587 MHz = 1202 (1024 ALUs: what github.com/azhirnov/as-en lists for the same-generation
#   Adreno 660). Other readings bracket it: 902 (768 lanes, the Adreno 640 layout measured by Chips and Cheese, "Inside
#   the Snapdragon 855's iGPU") and ~1350 (Qualcomm's launch claim of "+50 % ALUs over Adreno 640"); the project's
#   seed note said ~1450, which we could not reproduce.
# * 660 (888): 650 x 1.35 (Qualcomm launch claim, +35 % GPU) = 1623; as-en's Adreno 660 bench notes list 1622.
# * 740 (8 Gen 2): 1536 lanes x 680 MHz = 2089; lane count from Qualcomm's XR2 Gen 2 product brief (same Adreno 740:
#   1.8 TFLOPS at 600 MHz).
# * 730 (8 Gen 1): 4 SPs (Chips and Cheese, "Inside Snapdragon 8+ Gen 1's iGPU") x 256 lanes x 818 MHz = 1675;
#   740 / 1.25 (Qualcomm: Adreno 740 +25 %) = 1671 agrees. (Qualcomm's "+30 % over 660" is graphics, not FLOPS.)
# * 750 (8 Gen 3): 1536 lanes x 903 MHz = 2774; github.com/azhirnov/cpu-gpu-arch lists 3.07 TFLOPS at 1 GHz, and
#   BOINC PR 6997 derives 3072 GFLOPS at 1 GHz from the driver's 6 compute units.
_ADRENO_FP32_GFLOPS = {"650": 1202.0, "660": 1623.0, "730": 1675.0, "740": 2089.0, "750": 2774.0}


def _adreno(number: str, mhz: int) -> GpuFacts:
    return GpuFacts(f"Adreno {number}", mhz, _ADRENO_FP32_GFLOPS[number])


# Clocks and layouts: Qualcomm product briefs (AnandTech launch coverage for 865/888/8 Gen 1). GPU clocks: Notebookcheck
# / Wikipedia. Memory: Qualcomm spec sheets (4 x 16-bit channels; 8 Gen 2/3: github.com/EwoutH gist of SoC specs).
# SIMD pipes (SWOG): A77, A78, A710, A715, A720: 2 x 128-bit; X1, X2, X3, X4: 4 x 128-bit.
PRESETS: dict[str, SnapdragonPreset] = {p.soc: p for p in (
    SnapdragonPreset(  # Kryo 585; ARMv8.2-A
        "865", "Snapdragon 865", "SM8250",
        CpuFacts(big=(Cluster(1, "cortex-a77", 2.84, 2), Cluster(3, "cortex-a77", 2.42, 2)),
                 little=Cluster(4, "cortex-a55", 1.80), mattr=_NEON),
        _adreno("650", 587), "LPDDR5-5500", 5500),
    SnapdragonPreset(  # Kryo 680; ARMv8.2-A
        "888", "Snapdragon 888", "SM8350",
        CpuFacts(big=(Cluster(1, "cortex-x1", 2.84, 4), Cluster(3, "cortex-a78", 2.42, 2)),
                 little=Cluster(4, "cortex-a55", 1.80), mattr=_NEON),
        _adreno("660", 840), "LPDDR5-6400", 6400),
    SnapdragonPreset(  # Kryo (2022); ARMv9.0-A
        "8gen1", "Snapdragon 8 Gen 1", "SM8450",
        CpuFacts(big=(Cluster(1, "cortex-x2", 3.00, 4), Cluster(3, "cortex-a710", 2.50, 2)),
                 little=Cluster(4, "cortex-a510", 1.80), mattr=_NEON_V9),
        _adreno("730", 818), "LPDDR5-6400", 6400),
    SnapdragonPreset(  # Kryo (2023); ARMv9.0-A
        "8gen2", "Snapdragon 8 Gen 2", "SM8550",
        CpuFacts(big=(Cluster(1, "cortex-x3", 3.20, 4), Cluster(2, "cortex-a715", 2.80, 2),
                      Cluster(2, "cortex-a710", 2.80, 2)),
                 little=Cluster(3, "cortex-a510", 2.00), mattr=_NEON_V9),
        _adreno("740", 680), "LPDDR5X-8400", 8400),
    SnapdragonPreset(  # Kryo (2024); ARMv9.2-A
        "8gen3", "Snapdragon 8 Gen 3", "SM8650",
        CpuFacts(big=(Cluster(1, "cortex-x4", 3.30, 4), Cluster(3, "cortex-a720", 3.20, 2),
                      Cluster(2, "cortex-a720", 3.00, 2)),
                 little=Cluster(2, "cortex-a520", 2.30), mattr=_NEON_V9),
        _adreno("750", 903), "LPDDR5X-9600", 9600),
)}
