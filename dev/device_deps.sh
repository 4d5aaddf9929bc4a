#!/usr/bin/env bash
# Build packages for a machine that cannot reach a package registry (the lent GPU machines).
#   dev/device_deps.sh download          here: apt-get download the .debs into .debs/, and the cudnn-frontend
#                                        headers into .deps/ (carry both folders)
#   dev/device_deps.sh unpack DIR        there: unpack them into DIR (never into /) and write DIR/env.sh,
#                                        which points CMake, pkg-config and the loader at DIR
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1

packages=(libgtest-dev libgmock-dev googletest nlohmann-json3-dev libcli11-dev libpcre2-dev libpcre2-8-0
  libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread
  libgfortran5 pkgconf pkgconf-bin libpkgconf3 libxxhash-dev
  # OpenMPI (data parallel: mpirun, the NCCL id by MPI_Bcast) and the libraries it loads; relocated by OPAL_PREFIX
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7
  libevent-pthreads-2.1-7 libfabric1 libucx0 libpsm2-2 libpsm-infinipath1 libibverbs1 librdmacm1 libnl-3-200
  libnl-route-3-200 libnuma1 libmunge2 libpciaccess0 libxnvctrl0 libltdl7)

case "${1:-}" in
  download)
    mkdir -p .debs
    (cd .debs && apt-get download "${packages[@]}")
    echo "downloaded $(find .debs -name '*.deb' | wc -l) packages into .debs/ ($(du -sh .debs | cut -f1))"
    bash dev/deps.sh --cudnn-frontend  # headers for the cuDNN attention path, into .deps/ (carry it too)
    ;;
  unpack)
    root=$(mkdir -p "${2:?unpack needs a folder}" && cd "$2" && pwd)
    for deb in .debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
    lib="$root/usr/lib/x86_64-linux-gnu"
    cat >"$root/env.sh" <<ENV
export STAPO_SYSROOT="$root"
export STAPO_SYSROOT_BLAS="$lib/openblas-pthread/libopenblas.so"
export PKG_CONFIG="$root/usr/bin/pkgconf"
export PKG_CONFIG_LIBDIR="$lib/pkgconfig:$root/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$root"
export LD_LIBRARY_PATH="$lib/openblas-pthread:$lib/openmpi/lib:$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# OpenMPI finds its wrappers' data, help texts and plugins under OPAL_PREFIX; CMake takes the compiler wrapper
# (-DMPI_CXX_COMPILER) and the launcher (-DMPIEXEC_EXECUTABLE) from these two.
export OPAL_PREFIX="$root/usr"
export OPAL_LIBDIR="$lib/openmpi/lib"
export STAPO_MPI_CXX="$root/usr/bin/mpicxx.openmpi"
export STAPO_MPIRUN="$root/usr/bin/mpirun.openmpi"
ENV
    echo "unpacked $(find .debs -name '*.deb' | wc -l) packages into $root"
    ;;
  *)
    echo "usage: dev/device_deps.sh download | unpack DIR" >&2
    exit 2
    ;;
esac
