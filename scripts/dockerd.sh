#!/usr/bin/env bash
# Makes sure a Docker engine runs here and has the test image; used by
# scripts/test, the docker-source tests (which restart the engine) and
# bench/docker-events. Nothing can be pulled on these machines, so the
# image is built from the busybox-static binary with `docker import`.
#   scripts/dockerd.sh start     start dockerd unless one answers
#   scripts/dockerd.sh restart   stop it (containers stop too) and start it
#   scripts/dockerd.sh image     build muster-test/busybox:1 unless present
set -euo pipefail

LOG=${MUSTER_DOCKERD_LOG:-/tmp/muster-dockerd.log}
IMAGE=muster-test/busybox:1

up() { docker info >/dev/null 2>&1; }

start() {
  up && return 0
  command -v dockerd >/dev/null || { echo "dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
  # setsid: the engine must outlive the shell (and test) that started it.
  setsid nohup dockerd >>"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 150); do
    up && return 0
    sleep 0.2
  done
  echo "dockerd did not come up in 30 s; its log ($LOG):" >&2
  tail -20 "$LOG" >&2
  exit 1
}

stop() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || pgrep -x dockerd || true)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

image() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in sh httpd sleep killall nc; do ln -s busybox "$root/bin/$applet"; done
  echo "hello from muster-test" > "$root/www/index.html"
  tar -C "$root" -cf "$root.tar" .
  docker import -c 'CMD ["/bin/busybox","httpd","-f","-p","80","-h","/www"]' "$root.tar" "$IMAGE" >/dev/null
  rm -rf "$root" "$root.tar"
}

case "${1:-start}" in
  start) start ;;
  restart) stop; start ;;
  image) start; image ;;
  *) echo "usage: $0 start|restart|image" >&2; exit 2 ;;
esac
