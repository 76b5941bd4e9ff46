#!/usr/bin/env bash
# aarch64 proof: run edgerun's CPU path on arm64 under qemu-user and compare with x86_64.
# A Debian bookworm arm64 root filesystem (mmdebstrap, maintainer scripts under qemu), the
# aarch64 manylinux wheels of onnxruntime / ai-edge-litert / numpy / Pillow fetched on this host,
# edgerun installed into it, then `edgerun predict samples/chelsea.png` inside the arm64 chroot on
# both CPU backends. Passes when the top-1 class equals the x86_64 run's on this host.
# Slow (about 5 minutes the first time; the root filesystem is kept in $WORK). Run as root:
#
#   scripts/aarch64_proof.sh        # PYTHON=.venv/bin/python: the x86_64 edgerun to compare with
#
# Needs: apt-get install qemu-user-static binfmt-support mmdebstrap arch-test
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${EDGERUN_DEPLOY_WORK:-/var/tmp/edgerun-deploy}
ROOTFS=$WORK/rootfs-arm64
WHEELS=$WORK/wheels-aarch64
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
PY_TAGS=(--only-binary=:all: --python-version 3.11 --implementation cp
         --platform manylinux_2_36_aarch64 --platform manylinux_2_28_aarch64
         --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64
         --platform manylinux2014_aarch64)

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
die() { log "FAIL: $*"; exit 1; }

enable_binfmt() {
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || update-binfmts --enable qemu-aarch64
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt not enabled"
    log "binfmt: $(grep interpreter /proc/sys/fs/binfmt_misc/qemu-aarch64)"
}

make_rootfs() {
    if [[ -x $ROOTFS/usr/bin/python3 ]]; then log "arm64 root filesystem exists: $ROOTFS"; return; fi
    mkdir -p "$WORK" "$ROOTFS"
    if [[ ! -s $WORK/rootfs-arm64.tar ]]; then
        log "mmdebstrap --arch=arm64 bookworm (maintainer scripts run under qemu; a few minutes)"
        mmdebstrap --arch=arm64 --variant=minbase --include=python3,libstdc++6,ca-certificates \
            bookworm "$WORK/rootfs-arm64.tar"
    fi
    tar -C "$ROOTFS" -xf "$WORK/rootfs-arm64.tar"
}

install_edgerun() {
    rm -rf "$WHEELS" "$ROOTFS/opt/pylibs" && mkdir -p "$WHEELS"
    "$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$WHEELS" "$REPO"
    local wheel
    wheel=$(ls "$WHEELS"/edgerun-*.whl)
    "$PYTHON" -m pip download -q "${PY_TAGS[@]}" -d "$WHEELS" "${wheel}[onnx,litert,vision]"
    "$PYTHON" -m pip install -q --no-warn-conflicts --no-index --find-links "$WHEELS" "${PY_TAGS[@]}" \
        --target "$ROOTFS/opt/pylibs" "${wheel}[onnx,litert,vision]"
    local names=("$WHEELS"/onnxruntime-* "$WHEELS"/ai_edge_litert-* "$WHEELS"/numpy-* "$WHEELS"/pillow-*)
    log "aarch64 wheels: ${names[*]##*/}"
    cp "$REPO/samples/chelsea.png" "$ROOTFS/tmp/chelsea.png"
}

arm_run() {  # run a command in the arm64 chroot (no /proc, /sys: cpuinfo would be the x86 host's)
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin PYTHONPATH=/opt/pylibs HOME=/tmp "$@"
}

top1() {  # label and score of the first class in `edgerun predict --json` output on stdin
    python3 -c 'import json,sys; c=json.load(sys.stdin)["classes"][0]; print("%s\t%.4f" % (c["label"], c["score"]))'
}

main() {
    [[ $(id -u) == 0 ]] || die "run as root (chroot, binfmt)"
    [[ -x $PYTHON ]] || die "PYTHON=$PYTHON: an x86_64 python with edgerun[onnx,litert,vision] installed"
    enable_binfmt
    make_rootfs
    log "in the chroot: $(arm_run /usr/bin/python3 -c 'import platform,sys; print(platform.machine(), sys.version.split()[0])')"
    install_edgerun
    log "edgerun in the chroot: $(arm_run /usr/bin/python3 -m edgerun backends | head -3 | tr '\n' ' ')"
    local fail=0 backend x86 arm
    for backend in onnxruntime litert; do
        x86=$("$PYTHON" -m edgerun predict "$REPO/samples/chelsea.png" --backend "$backend" --json | top1)
        local start=$SECONDS
        arm=$(arm_run /usr/bin/python3 -m edgerun predict /tmp/chelsea.png --backend "$backend" --json \
              2>"$WORK/arm-$backend.stderr" | top1) || { tail "$WORK/arm-$backend.stderr"; die "arm64 run failed"; }
        log "$backend: x86_64 top-1 [$x86]  aarch64 (qemu-user, $((SECONDS - start)) s) top-1 [$arm]"
        [[ ${x86%%$'\t'*} == "${arm%%$'\t'*}" ]] || { log "MISMATCH on $backend"; fail=1; }
    done
    ((fail == 0)) || die "aarch64 top-1 differs from x86_64"
    log "PASS: aarch64 (qemu-user) and x86_64 agree on the top-1 class for samples/chelsea.png"
}

main "$@"
