#!/usr/bin/env bash
# The one system prerequisite: qemu-user + binfmt for the emulated aarch64 device (run as root, idempotent).
# aarch64 ELF files (the RPC server and its popen workers) then run transparently. Everything else comes from pip:
# the linker (ziglang's ld.lld) and OpenCL on the CPU (pocl-binary-distribution, the test/opencl extras).
set -euo pipefail

PKGS=(qemu-user-static binfmt-support)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-system: must run as root" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-system: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup-system: apt packages already installed"
fi

BINFMT=/proc/sys/fs/binfmt_misc
if ! mountpoint -q "$BINFMT"; then
  echo "setup-system: mounting binfmt_misc"
  mount -t binfmt_misc binfmt_misc "$BINFMT"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
  echo "setup-system: registering qemu-aarch64"
  update-binfmts --enable qemu-aarch64
elif ! grep -q '^enabled' "$BINFMT/qemu-aarch64"; then
  echo "setup-system: enabling qemu-aarch64"
  echo 1 > "$BINFMT/qemu-aarch64"
fi
echo "setup-system: qemu-aarch64 binfmt: $(head -n1 "$BINFMT/qemu-aarch64"), $(grep '^flags' "$BINFMT/qemu-aarch64")"
