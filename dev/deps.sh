#!/usr/bin/env bash
# The Debian packages stapo builds against, in one place.
#   dev/deps.sh --install           apt-get install what is missing (prints the command when not root)
#   dev/deps.sh --check-or-install  do nothing when all are present, else as --install
# The CUDA toolkit (nvcc, cuBLASLt, cuDNN, NCCL) is not a Debian package here; CMake finds it when present.
set -euo pipefail

packages=(cmake g++ make pkg-config ccache libgtest-dev libgmock-dev nlohmann-json3-dev libpcre2-dev libcli11-dev
  libopenblas-dev libomp-dev)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
  [ "${1:-}" = "--install" ] && echo "deps: all ${#packages[@]} packages are installed"
  exit 0
fi

command=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: run as root:  apt-get update && ${command[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${command[@]}"
