#!/usr/bin/env bash
# ARM64 under emulation: the wheel and its aarch64 dependencies in a Debian arm64 root filesystem, run by
# qemu-user as a Cortex-A72 (no dot product) and as qemu's `max` CPU (dotprod, i8mm, SVE); every variant's
# rows must equal the x86 rows (cosine >= 0.9999). No timings: speed under emulation means nothing.
#   .ci/arm64.sh WHEEL BUNDLE WORK    (root; the root filesystem is cached in $EDGECLIP_ARM64_ROOT)
set -euo pipefail
WHEEL=$(realpath "$1") BUNDLE=$(realpath "$2") WORK=$(realpath -m "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${EDGECLIP_ARM64_ROOT:-/var/cache/edgeclip/arm64-bookworm}
mkdir -p "$WORK"

if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null; then
    apt-get update -q >/dev/null && apt-get install -y -q qemu-user-static debootstrap binfmt-support >/dev/null
fi
# Executing arm64 binaries inside the root filesystem needs the kernel's binfmt_misc entry for qemu.
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

if [ ! -e "$ROOT/.edgeclip-ready" ]; then  # ~3 min; kept between runs where the machine keeps /var/cache
    rm -rf "$ROOT.partial"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv bookworm "$ROOT.partial" \
        http://deb.debian.org/debian >"$WORK/debootstrap.log"
    touch "$ROOT.partial/.edgeclip-ready"
    rm -rf "$ROOT" && mv "$ROOT.partial" "$ROOT"
fi

# The wheel's aarch64 dependencies, resolved on this host for Debian bookworm's Python 3.11.
python3 -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 -d "$WORK/wheels" "$WHEEL" 2>&1 | grep -v "^WARNING: Location" || true
STAGE="$ROOT/opt/edgeclip"
rm -rf "$STAGE" && mkdir -p "$STAGE/out"
cp -r "$WORK/wheels" "$STAGE/wheels" && cp -r "$BUNDLE" "$STAGE/bundle" && cp "$HERE/variant_rows.py" "$STAGE/"

# /proc is mounted (as on a real box), /sys is not: onnxruntime's cpuinfo crashes on the host's /sys.
# A clean environment inside: the host's PATH, VIRTUAL_ENV and pip settings mean nothing there (and broke ensurepip).
in_root() {
    unshare -m --propagation private sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$ROOT" \
        /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} "$@"
}
in_root python3 -m venv /opt/edgeclip/venv
in_root /opt/edgeclip/venv/bin/pip install -q --no-index --find-links /opt/edgeclip/wheels edgeclip
for cpu in cortex-a72 max; do
    QEMU_CPU=$cpu in_root /opt/edgeclip/venv/bin/python /opt/edgeclip/variant_rows.py embed /opt/edgeclip/bundle \
        "/opt/edgeclip/out/arm64-$cpu.npz"
done
cp "$STAGE"/out/*.npz "$WORK/"
python3 "$HERE/variant_rows.py" embed "$BUNDLE" "$WORK/x86_64.npz" >/dev/null
python3 "$HERE/variant_rows.py" compare "$WORK/x86_64.npz" "$WORK/arm64-cortex-a72.npz" "$WORK/arm64-max.npz"
