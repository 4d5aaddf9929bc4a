#!/usr/bin/env bash
# The Debian packages stapo builds against, in one place.
#   dev/deps.sh --install           apt-get install what is missing (prints the command when not root)
#   dev/deps.sh --check-or-install  do nothing when all are present, else as --install
#   dev/deps.sh --cudnn-frontend    fetch NVIDIA's header-only cudnn-frontend into .deps/ (for the optional cuDNN
#                                   attention path, kernels/attention_cudnn.h; CMake turns it on when present)
# The CUDA toolkit (nvcc, cuBLASLt, cuDNN, NCCL) is not a Debian package here; CMake finds it when present.
set -euo pipefail

if [ "${1:-}" = "--cudnn-frontend" ]; then
  # Pinned. Its home is github.com/NVIDIA/cudnn-frontend (include/); its PyPI wheel ships the same headers,
  # and PyPI is what this machine and CI can reach. Only the headers are kept: nothing Python is installed.
  version=1.32.0
  target="$(cd "$(dirname "$0")/.." && pwd)/.deps/cudnn-frontend"
  if [ -f "$target/VERSION" ] && [ "$(cat "$target/VERSION")" = "$version" ]; then exit 0; fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$tmp" "nvidia-cudnn-frontend==$version"
  rm -rf "$target"
  mkdir -p "$target"
  python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith('include/')])" "$tmp"/*.whl "$target"
  echo "$version" >"$target/VERSION"
  echo "deps: cudnn-frontend $version headers in $target/include"
  exit 0
fi

packages=(cmake g++ make pkg-config ccache libgtest-dev libgmock-dev nlohmann-json3-dev libpcre2-dev libcli11-dev
  libopenblas-dev libomp-dev libxxhash-dev libopenmpi-dev openmpi-bin)

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
