"""TVM targets for Snapdragon phones (865, 888, 8 Gen 1/2/3: Kryo CPU and Adreno GPU) and for this machine.

Why a package: every other part (compile pipeline, tuning, benchmarks, reports) names targets by short strings and
needs the same device facts for rooflines; keeping targets and facts in one table stops them drifting apart.

    import targets
    tgt = targets.get_target("snapdragon/865-adreno-texture")    # or "arm", "adreno", "host", any TVM tag, a dict
    targets.preset_for(tgt).roofline("gpu").peak_gflops["float16"]

Importing registers every name in `names()` as a TVM tag (idempotently), so ``tvm.target.Target("arm")`` works too.
"""

from .host import host_arch, host_config
from .registry import get_target, is_adreno, is_arm, is_texture, names, preset_for, register_tags
from .snapdragon import PRESETS, Cluster, CpuFacts, GpuFacts, Roofline, SnapdragonPreset

__all__ = [
    "PRESETS", "Cluster", "CpuFacts", "GpuFacts", "Roofline", "SnapdragonPreset",
    "get_target", "host_arch", "host_config", "is_adreno", "is_arm", "is_texture", "names", "preset_for",
    "register_tags",
]

register_tags()
