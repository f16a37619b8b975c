"""Target names -> TVM targets: the ``snapdragon/*`` tags, short aliases, "host", and TVM tag registration.

Every name in `names()` is also registered as a TVM tag, so ``tvm.target.Target("snapdragon/865-adreno")`` and
``tvm.target.Target("arm")`` work anywhere once ``targets`` is imported (TVM 0.27 accepts tag names without "/";
tags take precedence over target kinds, so an alias must never be a kind name such as "llvm" -- the tests check).

Names
* ``snapdragon/<soc>-cpu``: the big cores, ``aarch64-linux-android``;
* ``snapdragon/<soc>-adreno`` / ``-adreno-texture``: OpenCL on Adreno (buffer / image2d "texture" path), built on
  TVM's ``qcom/adreno-opencl[-texture]`` tags, with ``host`` = that SoC's CPU target;
* ``snapdragon/865-cpu-linux``: the 865 CPU with the ``aarch64-linux-gnu`` triple (the qemu-emulated aarch64 device);
* aliases ``arm``, ``adreno``, ``adreno-texture``, ``aarch64-linux`` -> the 865 targets above;
* ``host``: this machine (`targets.host`).
Each target's ``tag`` attribute is its canonical name (aliases resolve to the canonical target, tag included).
"""

from __future__ import annotations

from tvm.target import Target
from tvm.target.tag import list_tags, register_tag

from .host import host_config
from .snapdragon import LINUX_TRIPLE, PRESETS, SnapdragonPreset

PREFIX = "snapdragon/"
DEFAULT_SOC = "865"
HOST = "host"
LINUX_TAG = f"{PREFIX}{DEFAULT_SOC}-cpu-linux"
ALIASES = {
    "arm": f"{PREFIX}{DEFAULT_SOC}-cpu",
    "adreno": f"{PREFIX}{DEFAULT_SOC}-adreno",
    "adreno-texture": f"{PREFIX}{DEFAULT_SOC}-adreno-texture",
    "aarch64-linux": LINUX_TAG,
}
_ADRENO_BASE = {False: "qcom/adreno-opencl", True: "qcom/adreno-opencl-texture"}


def _adreno_base(texture: bool) -> dict:
    """TVM's own Adreno tag as a config dict, so thread/texture limits follow TVM rather than a copy of them."""
    return {str(k): v for k, v in Target(_ADRENO_BASE[texture]).export().items()}


def _snapdragon_configs() -> dict[str, tuple[dict, SnapdragonPreset]]:
    """Canonical snapdragon tag -> (target config, preset)."""
    table = {}
    for soc, preset in PRESETS.items():
        cpu_tag = f"{PREFIX}{soc}-cpu"
        cpu = preset.cpu_config(cpu_tag)
        table[cpu_tag] = (cpu, preset)
        for texture in (False, True):
            tag = f"{PREFIX}{soc}-adreno" + ("-texture" if texture else "")
            table[tag] = (preset.adreno_config(tag, _adreno_base(texture), host=cpu), preset)
    table[LINUX_TAG] = (PRESETS[DEFAULT_SOC].cpu_config(LINUX_TAG, LINUX_TRIPLE), PRESETS[DEFAULT_SOC])
    return table


_SNAPDRAGON = _snapdragon_configs()
_CONFIGS: dict[str, dict] = {
    **{tag: config for tag, (config, _) in _SNAPDRAGON.items()},
    **{alias: _SNAPDRAGON[tag][0] for alias, tag in ALIASES.items()},
    HOST: host_config(),
}


def register_tags() -> None:
    """Register every name as a TVM tag. Idempotent (``override=True``): re-importing or reloading is harmless."""
    for name, config in _CONFIGS.items():
        register_tag(name, config, override=True)


def names() -> list[str]:
    """Every name `get_target` resolves itself (snapdragon tags, aliases, "host"), sorted."""
    return sorted(_CONFIGS)


def _unknown(what: str, name, valid, also: str = "") -> ValueError:
    return ValueError(f"unknown {what} {name!r}; valid names: {', '.join(sorted(valid))}{also}")


def get_target(name) -> Target:
    """A `tvm.target.Target` for a name in `names()`, any other TVM tag, a config dict, or a Target (returned as is)."""
    if isinstance(name, Target):
        return name
    if isinstance(name, dict):
        return Target(name)
    if not isinstance(name, str):
        raise TypeError(f"expected a target name, config dict or tvm.target.Target, got {type(name).__name__}")
    if name in _CONFIGS:
        return Target(_CONFIGS[name])
    if name in list_tags():
        return Target(name)
    raise _unknown("target", name, names(), "; or any TVM tag (e.g. qcom/adreno-opencl), a config dict or a Target")


def preset_for(name) -> SnapdragonPreset:
    """The preset of a soc key ("865"), a snapdragon name or alias, or a Target whose ``tag`` is one of those."""
    key = str(name.tag) if isinstance(name, Target) else name
    if key in PRESETS:
        return PRESETS[key]
    key = ALIASES.get(key, key)
    if key in _SNAPDRAGON:
        return _SNAPDRAGON[key][1]
    if key == HOST:
        raise ValueError("'host' is this machine, not a Snapdragon: it has no preset (and no roofline)")
    raise _unknown("Snapdragon preset", name, [*PRESETS, *_SNAPDRAGON, *ALIASES])


def _keys(target) -> set[str]:
    return {str(k) for k in get_target(target).keys}


def is_adreno(target) -> bool:
    """True for Adreno targets (the key that makes ``relax.pipeline`` pick the Adreno backend)."""
    return "adreno" in _keys(target)


def is_texture(target) -> bool:
    """True for the Adreno texture (image2d, NCHW4c) path: the ``texture`` key."""
    return "texture" in _keys(target)


def is_arm(target) -> bool:
    """True for Arm CPU targets (``arm_cpu`` key: TVM's arm_cpu strategies and tensor intrinsics apply)."""
    return "arm_cpu" in _keys(target)
