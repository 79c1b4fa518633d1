#!/usr/bin/env bash
# `npm run build:prebuilds` (and prepack): the prebuilt N-API addons the package ships,
# prebuilds/<platform>-<arch>/physmem.glibc.node, for node-gyp-build to load.
# This machine's architecture always; linux-arm64 too when the cross compiler
# is installed (apt-get install g++-aarch64-linux-gnu), else it says so.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf prebuilds # nothing stale in the tarball
if [ "$(uname -m)" = x86_64 ]; then
  if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    echo "prebuild: linux-arm64 (cross-compiled with aarch64-linux-gnu-g++)"
    CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar \
      prebuildify --napi --strip --tag-libc --arch arm64 --strip-bin aarch64-linux-gnu-strip
  else
    echo "prebuild: no linux-arm64 binary: aarch64-linux-gnu-g++ is missing (apt-get install g++-aarch64-linux-gnu)" >&2
  fi
fi
echo "prebuild: $(node -p 'process.platform + "-" + process.arch')"
prebuildify --napi --strip --tag-libc
