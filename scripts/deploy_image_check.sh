#!/usr/bin/env bash
# Build the generic CPU image (docker/Dockerfile) with buildah and run it with podman, with no
# container registry: the base image is a Debian bookworm root filesystem made here by mmdebstrap.
# Then check, against the running container: /v2/health/ready answers 200, one image inference
# returns "Egyptian cat" for samples/chelsea.png, the HEALTHCHECK passes, the process is not root,
# there is no compiler in the image, a host that does not match the image gets a clear error
# (exit 78), and SIGTERM stops it cleanly. Too slow for CI (minutes); run it by hand, as root:
#
#   scripts/deploy_image_check.sh            # STAGE=build to stop after the build
#   ARCH=arm64 scripts/deploy_image_check.sh # the arm64 image, built and run under qemu-user
#   STAGE=systemd scripts/deploy_image_check.sh  # then systemd/edgerun.service under a real
#       systemd (PID 1 of a privileged container): READY before "active", watchdog pings, a
#       watchdog restart of a frozen service, inference in the sandbox with the drop-ins, clean stop
#
# Needs: apt-get install buildah podman runc mmdebstrap curl (arm64 also: qemu-user-static
# binfmt-support arch-test, with the qemu-aarch64 binfmt handler enabled).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${EDGERUN_DEPLOY_WORK:-/var/tmp/edgerun-deploy}
ARCH=${ARCH:-amd64}
BASE=localhost/edgerun-base:bookworm-$ARCH
IMAGE=localhost/edgerun-cpu:check-$ARCH
NAME=edgerun-image-check
PORT=${PORT:-18431}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-240}
RUN_FLAGS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --arch "$ARCH")
if [[ $ARCH != amd64 ]]; then
    # Under qemu-user the host's x86 CPU topology in /sys and /proc makes onnxruntime's and
    # LiteRT's cpuinfo crash (SIGSEGV): hide it, as a real arm64 host would show its own.
    RUN_FLAGS+=(--security-opt mask=/sys/devices/system/cpu:/proc/cpuinfo)
fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
die() { log "FAIL: $*"; exit 1; }

for tool in buildah podman runc mmdebstrap curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
mkdir -p "$WORK"

base_image() {
    if podman image exists "$BASE"; then log "base image $BASE exists"; return; fi
    local tarball=$WORK/bookworm-$ARCH-venv.tar
    if [[ ! -s $tarball ]]; then
        log "mmdebstrap --arch=$ARCH: Debian bookworm minbase + python3, python3-venv"
        mmdebstrap --arch="$ARCH" --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$tarball"
    fi
    podman import --arch "$ARCH" "$tarball" "$BASE" >/dev/null
    log "imported $BASE"
}

build_context() {
    # Only the files git would ship (tracked + untracked-but-not-ignored): no venvs, no caches.
    rm -rf "$WORK/context" && mkdir -p "$WORK/context"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$WORK/context" -xf -
}

build_image() {
    build_context
    log "buildah build docker/Dockerfile with BASE_IMAGE=$BASE"
    local start=$SECONDS
    # pip inside RUN steps trusts this host's CA bundle (a TLS-intercepting proxy, if any).
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$WORK/pip.conf"
    buildah build --isolation chroot --format docker --layers --platform "linux/$ARCH" \
        --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        --volume "$WORK/pip.conf:/etc/pip.conf:ro" \
        --build-arg BASE_IMAGE="$BASE" -f "$WORK/context/docker/Dockerfile" -t "$IMAGE" "$WORK/context"
    log "built $IMAGE in $((SECONDS - start)) s, $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
}

cleanup() { podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true; }

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until curl -fsS -m 3 "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null 2>&1; do
        [[ $(podman inspect -f '{{.State.Running}}' "$NAME") == true ]] \
            || { podman logs "$NAME" | tail -20; die "container exited before it was ready"; }
        ((SECONDS < deadline)) || { podman logs "$NAME" | tail -20; die "not ready in ${READY_TIMEOUT_S}s"; }
        sleep 2
    done
    log "GET /v2/health/ready -> 200 after $((SECONDS - deadline + READY_TIMEOUT_S)) s"
}

check_inference() {
    local answer
    answer=$(curl -fsS -m 30 -X POST --data-binary @"$REPO/samples/chelsea.png" \
        -H 'Content-Type: application/octet-stream' \
        "http://127.0.0.1:$PORT/v1/models/mobilenet_v2/predict")
    log "POST /v1/models/mobilenet_v2/predict samples/chelsea.png -> ${answer:0:300}"
    grep -q '"Egyptian cat"' <<<"$answer" || die "top class is not Egyptian cat"
}

check_running_image() {
    log "user in the container: $(podman exec "$NAME" id)"
    [[ $(podman exec "$NAME" id -u) != 0 ]] || die "the service runs as root"
    podman exec "$NAME" sh -c 'for c in gcc cc g++ make; do command -v $c; done; true' | grep . \
        && die "a build tool is in the final image"
    log "no compiler or make in the final image"
    podman healthcheck run "$NAME" || die "HEALTHCHECK failed"
    log "podman healthcheck run -> healthy"
}

check_host_mismatch() {
    local rc=0 out
    out=$(podman run --rm "${RUN_FLAGS[@]}" --no-healthcheck --network none \
        -e EDGERUN_IMAGE_TARGET=jetson -e EDGERUN_IMAGE_L4T=36.4.0 "$IMAGE" 2>&1) || rc=$?
    log "as a Jetson image on this host: exit $rc: $(grep -m1 edgerun-entrypoint <<<"$out" | cut -c1-300)"
    [[ $rc == 78 ]] || die "expected exit 78 for a host that does not match"
}

stop_cleanly() {
    podman stop -t 30 "$NAME" >/dev/null
    local code
    code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
    log "podman stop (SIGTERM) -> exit code $code"
    [[ $code == 0 ]] || die "service did not exit cleanly on SIGTERM"
}

SYSTEMD_NAME=edgerun-systemd-check
SYSTEMD_IMAGE=localhost/edgerun-systemd:check-$ARCH

systemd_image() {
    local base=localhost/edgerun-systemd-base:bookworm-$ARCH tarball=$WORK/bookworm-$ARCH-systemd.tar
    local dir=$WORK/systemd-context
    if ! podman image exists "$base"; then
        [[ -s $tarball ]] || mmdebstrap --arch="$ARCH" --variant=minbase \
            --include=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,curl bookworm "$tarball"
        podman import --arch "$ARCH" "$tarball" "$base" >/dev/null
    fi
    rm -rf "$dir" && mkdir -p "$dir/launch" && cp -r "$REPO/systemd" "$dir/"
    # No Edge TPU here: coral-pcie.conf would (rightly) fail the start with result 'dependency'
    # once dev-apex_0.device times out (90 s).
    rm "$dir/systemd/edgerun.service.d/coral-pcie.conf"
    cp "$REPO/samples/chelsea.png" "$dir/launch/"
    # binfmt_misc is host-wide: the privileged container's systemd must not touch its handlers.
    printf '%s\n' "FROM $base" "COPY --from=$IMAGE /opt/edgerun /opt/edgerun" \
        "COPY systemd/edgerun.service /etc/systemd/system/edgerun.service" \
        "COPY systemd/edgerun.service.d/ /etc/systemd/system/edgerun.service.d/" \
        "COPY systemd/sysusers.d/edgerun.conf /etc/sysusers.d/edgerun.conf" \
        "COPY launch/ /opt/launch/" \
        "RUN systemd-sysusers && systemctl enable edgerun.service && systemctl mask systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount" \
        'CMD ["/sbin/init"]' > "$dir/Containerfile"
    buildah build --isolation chroot --format docker --platform "linux/$ARCH" -q \
        -t "$SYSTEMD_IMAGE" "$dir" >/dev/null
    log "built $SYSTEMD_IMAGE: the unit, every drop-in but coral-pcie, sysusers.d"
}

in_unit() { podman exec "$SYSTEMD_NAME" "$@"; }
unit_prop() { in_unit systemctl show edgerun -p "$1" --value; }

wait_active() {
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until [[ $(in_unit systemctl is-active edgerun || true) == active ]]; do
        ((SECONDS < deadline)) || { in_unit journalctl -u edgerun --no-pager | tail -20; die "unit not active"; }
        sleep 2
    done
}

check_watchdog() {
    local first second
    first=$(unit_prop WatchdogTimestampMonotonic)
    sleep $(( $(unit_prop WatchdogUSec | tr -dc 0-9) / 2 + 3 ))
    second=$(unit_prop WatchdogTimestampMonotonic)
    ((second > first)) || die "no watchdog ping in half a watchdog period"
    log "systemd: WATCHDOG=1 pings arrive (WatchdogUSec=$(unit_prop WatchdogUSec))"
    in_unit systemctl kill -s SIGSTOP edgerun
    local deadline=$((SECONDS + 90))
    until [[ $(unit_prop NRestarts) -ge 1 ]]; do
        ((SECONDS < deadline)) || die "a frozen service was not restarted by the watchdog"
        sleep 2
    done
    wait_active
    log "systemd: frozen (SIGSTOP) -> '$(in_unit journalctl -u edgerun -o cat --no-pager \
        | grep -m1 'Watchdog timeout')', restarted, active again"
}

check_systemd_unit() {
    systemd_image
    podman rm -f -t 5 "$SYSTEMD_NAME" >/dev/null 2>&1 || true
    trap 'cleanup; podman rm -f -t 5 "$SYSTEMD_NAME" >/dev/null 2>&1 || true' EXIT
    podman run -d --name "$SYSTEMD_NAME" "${RUN_FLAGS[@]}" --no-healthcheck --systemd=always \
        --privileged "$SYSTEMD_IMAGE" >/dev/null
    wait_active
    log "systemd: edgerun.service active after READY=1, status '$(unit_prop StatusText)'," \
        "user $(unit_prop User), drop-ins: $(unit_prop DropInPaths | tr ' ' '\n' | sed 's|.*/||' | tr '\n' ' ')"
    local answer
    answer=$(in_unit curl -fsS -m 30 -X POST --data-binary @/opt/launch/chelsea.png \
        http://127.0.0.1:8000/v1/models/mobilenet_v2/predict)
    grep -q '"Egyptian cat"' <<<"$answer" || die "inference inside the sandbox failed: $answer"
    log "systemd: inference inside the sandboxed unit -> Egyptian cat"
    check_watchdog
    in_unit systemctl stop edgerun
    [[ $(unit_prop Result) == success && $(unit_prop ExecMainStatus) == 0 ]] \
        || die "systemctl stop: Result=$(unit_prop Result) status=$(unit_prop ExecMainStatus)"
    log "systemd: systemctl stop -> Result=success, exit status 0;" \
        "$(in_unit systemd-analyze security edgerun --no-pager | tail -1)"
}

main() {
    base_image
    build_image
    [[ ${STAGE:-run} == build ]] && { log "STAGE=build: stopping after the build"; return; }
    cleanup
    trap cleanup EXIT
    # The same hardening as docker/compose/*.yaml: read-only root, no capabilities.
    podman run -d --name "$NAME" "${RUN_FLAGS[@]}" -p "127.0.0.1:$PORT:8000" \
        --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
        -v edgerun-check-cache:/var/cache/edgerun "$IMAGE" >/dev/null
    wait_ready
    check_inference
    check_running_image
    check_host_mismatch
    stop_cleanly
    [[ ${STAGE:-run} == systemd ]] && check_systemd_unit
    log "PASS: image $IMAGE built and answered readiness and one inference"
}

main "$@"
