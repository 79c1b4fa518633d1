#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, then install the tarball into a
# clean project on a PATH with no compiler, no make and no python, run
# `npx physmem demo`, and check that the addon it loaded is the prebuilt one
# (node-gyp-build would otherwise have compiled it, which fails here).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/physmem-pack-XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "pack-check: npm pack (prepack builds the prebuilt addons, prepare compiles the TypeScript)"
npm pack --silent --pack-destination "$work" >"$work/pack.out"
tgz="$work/$(tail -n1 "$work/pack.out")"
tar -tzf "$tgz" | sed 's|^package/||' | sort >"$work/files"
for f in package.json LICENSE CHANGELOG.md README.md dist/lib/index.js dist/lib/index.d.ts dist/lib/cli/bin.js \
  prebuilds/linux-x64/physmem.glibc.node binding.gyp native/physmem.cc examples/quickstart.ts examples/edu/README.md; do
  grep -qxF "$f" "$work/files" || { echo "pack-check: $f is missing from the tarball" >&2; exit 1; }
done
if grep -E '\.map$' "$work/files"; then echo 'pack-check: source maps in the tarball (their sources are not shipped)' >&2; exit 1; fi
echo "pack-check: tarball $(basename "$tgz"), $(wc -l <"$work/files") files, $(du -k "$tgz" | cut -f1) KiB"

# A PATH holding only node, npm, npx and sh (npm runs install scripts with it): no g++, cc, make or python3.
bin="$work/bin"; mkdir -p "$bin"
for t in node npm npx sh; do ln -s "$(command -v "$t")" "$bin/$t"; done
for t in g++ c++ cc gcc make python3 python; do
  if PATH="$bin" command -v "$t" >/dev/null 2>&1; then echo "pack-check: $t is on the clean PATH" >&2; exit 1; fi
done
echo "pack-check: clean PATH has node, npm, npx, sh and no g++, cc, make, python3"

proj="$work/project"; mkdir -p "$proj"
echo '{ "name": "physmem-pack-check", "version": "1.0.0", "private": true, "type": "module" }' >"$proj/package.json"
(cd "$proj" && PATH="$bin" npm install --prefer-offline --no-audit --no-fund --loglevel=error "$tgz")
[ ! -e "$proj/node_modules/physmem/build" ] || { echo 'pack-check: the install compiled the addon (build/ exists)' >&2; exit 1; }

(cd "$proj" && PATH="$bin" npx --no-install physmem demo --json) >"$work/demo.json"
PATH="$bin" node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const want = require("path").join(process.argv[2], "node_modules/physmem/prebuilds/linux-x64/physmem.glibc.node");
  if (!r.ok) throw new Error("demo failed: " + JSON.stringify(r));
  if (!r.addon || r.addon.kind !== "prebuilt" || r.addon.path !== want) throw new Error("addon not the prebuilt one: " + JSON.stringify(r.addon));
  console.log("pack-check: npx physmem demo ok on the " + r.backend + " backend with the prebuilt addon " + r.addon.path);
' "$work/demo.json" "$proj"
# ESM-only: import works, and so does require() where Node has require(esm) (20.19+, 22.12+; README says so).
(cd "$proj" && PATH="$bin" node --input-type=module -e 'import { openPoolSync } from "physmem"; const p = openPoolSync({ backend: "fake" }); p.alloc(64).free(); p.close(); console.log("pack-check: import ok");')
(cd "$proj" && PATH="$bin" node -e '
  const [maj, min] = process.versions.node.split(".").map(Number);
  const hasRequireEsm = (maj === 20 && min >= 19) || (maj === 22 && min >= 12) || maj >= 23;
  let got;
  try { got = typeof require("physmem").openPoolSync; } catch (e) { got = e.code; }
  const want = hasRequireEsm ? "function" : "ERR_REQUIRE_ESM";
  if (got !== want) throw new Error(`require("physmem") on Node ${process.version}: ${got}, README says ${want}`);
  console.log(`pack-check: require("physmem") on Node ${process.version}: ${got}, as the README says`);
' 2>&1 | grep -v ExperimentalWarning | grep -v 'node --trace-warnings')
# linux-arm64: the cross-built prebuilt addon loads and works under an arm64
# runtime. Node's arm64 binaries are not in the npm registry; Bun's are
# (@oven/bun-linux-aarch64), and Bun loads N-API addons: run it under
# qemu-user with Debian's arm64 libc (from g++-aarch64-linux-gnu).
# PHYSMEM_PACK_ARM64=1 (CI) makes a missing binary or toolchain a failure.
strict=${PHYSMEM_PACK_ARM64:-0}
if ! grep -qxF prebuilds/linux-arm64/physmem.glibc.node "$work/files"; then
  echo "pack-check: no linux-arm64 prebuilt addon in the tarball"
  [ "$strict" != 1 ] || { echo 'pack-check: PHYSMEM_PACK_ARM64=1 wants one (apt-get install g++-aarch64-linux-gnu)' >&2; exit 1; }
elif ! command -v qemu-aarch64 >/dev/null 2>&1 || [ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
  echo "pack-check: linux-arm64 addon shipped but not verified here (needs qemu-user and g++-aarch64-linux-gnu)"
  [ "$strict" != 1 ] || exit 1
else
  bunver=$(node -p 'require("./node_modules/bun/package.json").version')
  (cd "$work" && npm pack --silent "@oven/bun-linux-aarch64@$bunver" >/dev/null && tar xzf oven-bun-linux-aarch64-"$bunver".tgz && mv package bun-arm64)
  cat >"$proj/arm64-check.mjs" <<'JS'
import { openPoolSync, nativeAddonSource } from 'physmem';
const pool = openPoolSync({ backend: 'fake', size: 1 << 20 });
const b = pool.alloc(4096, { align: 4096 });
b.bytes.fill(0xa5);
const ok = b.bytes.every((x) => x === 0xa5);
b.free();
pool.close();
console.log(JSON.stringify({ arch: process.arch, ok, detached: b.bytes.length === 0, addon: nativeAddonSource() }));
JS
  out=$(cd "$proj" && qemu-aarch64 -L /usr/aarch64-linux-gnu "$work/bun-arm64/bin/bun" arm64-check.mjs)
  node -e '
    const r = JSON.parse(process.argv[1]);
    const want = require("path").join(process.argv[2], "node_modules/physmem/prebuilds/linux-arm64/physmem.glibc.node");
    if (r.arch !== "arm64" || !r.ok || !r.detached || r.addon?.kind !== "prebuilt" || r.addon.path !== want) throw new Error("arm64 check: " + process.argv[1]);
    console.log("pack-check: linux-arm64 prebuilt addon loads under Bun " + process.argv[3] + " (arm64, qemu-user): fake pool alloc, write, free, detach ok");
  ' "$out" "$proj" "$bunver"
fi
echo "pack-check: ok"
