#!/usr/bin/env bash
# Runs fmhl-ops on this machine: installs what is missing, starts RabbitMQ and PostgreSQL, migrates,
# starts the six services as separate processes, and stops only what it started.
# Usage: stack.sh up | down | status | logs | migrate | install | infra | credentials | restart | demo | test [args]
#        stack.sh compose-env [DIR]   (the env files docker-compose.yml reads; DIR defaults to .run/compose)
#        stack.sh k8s-env [DIR] [NAMESPACE] [DB_HOST] [MQ_HOST]   (the Secrets of deploy/k8s, as env files)
#
# Each service runs as its own RabbitMQ user and PostgreSQL role, limited to what its code uses
# (libs/messaging/permissions.py, libs/db/grants.py), with only its own credentials and settings in
# .run/env/<service>.env. The users, roles, vhost and database belong to the machine, not to a checkout, so
# their passwords are generated once per machine into FMHL_SECRETS_DIR (default /var/lib/fmhl-ops/secrets, 0700):
# every checkout finds the same ones and none resets another's (docs/SECURITY.md).
# A second stack beside the first (tests): FMHL_VHOST, FMHL_DATABASE, FMHL_PRINCIPAL_PREFIX (users
# <prefix>-<service>, roles <prefix>_<service>), FMHL_HTTP_PORTS (six ports, in SERVICES order), FMHL_SMTP_PORT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN="$ROOT/.run"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
SECRETS="${FMHL_SECRETS_DIR:-/var/lib/fmhl-ops/secrets}"
VHOST="${FMHL_VHOST:-fmhl}"
DATABASE="${FMHL_DATABASE:-fmhl}"
PREFIX="${FMHL_PRINCIPAL_PREFIX:-fmhl}"
SMTP_SINK_PORT="${FMHL_SMTP_PORT:-2525}"
mkdir -p "$RUN/logs" "$RUN/pids"

SERVICES=(ingest-gateway dlq-service distribution-worker email-worker export-worker scheduler)
declare -A PORTS=([ingest-gateway]=8000 [dlq-service]=8001 [distribution-worker]=8101
                  [email-worker]=8102 [export-worker]=8103 [scheduler]=8104)
declare -A MODULES=([ingest-gateway]=ingest_gateway [dlq-service]=dlq_service
                    [distribution-worker]=distribution_worker [email-worker]=email_worker
                    [export-worker]=export_worker [scheduler]=scheduler)
# The shared settings each service needs besides its own credentials: a worker never sees a signing key.
declare -A SETTINGS=([ingest-gateway]="JWT_SECRET TOTP_ENCRYPTION_KEY EXPORT_DIR"
                     [dlq-service]="JWT_SECRET DLQ_RETRY_SIGNING_KEY TOTP_ENCRYPTION_KEY" [scheduler]="JWT_SECRET"
                     [distribution-worker]="" [email-worker]="SMTP_HOST SMTP_PORT" [export-worker]="EXPORT_DIR")
if [ -n "${FMHL_HTTP_PORTS:-}" ]; then
  read -r -a _ports <<< "$FMHL_HTTP_PORTS"
  [ ${#_ports[@]} -eq ${#SERVICES[@]} ] || { echo "FMHL_HTTP_PORTS needs ${#SERVICES[@]} ports" >&2; exit 2; }
  for i in "${!SERVICES[@]}"; do PORTS[${SERVICES[$i]}]=${_ports[$i]}; done
fi

say() { printf '\033[1m[fmhl]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- secrets: generated once per machine, never committed -------------------------------------
# A file is created complete under a temporary name and linked into place: when two checkouts race, the
# first link wins and both read the same password. A checkout from before secrets were machine-wide brings
# its own .run/<name> along, so the stack it started keeps working (FMHL_ADOPT_CHECKOUT_SECRETS=no: a
# throwaway secrets folder, as the compose test's, takes nothing from the checkout).
# `secret NAME [fernet]`: a Fernet key (TOTP secrets at rest) instead of a password.
secret() {
  local file="$SECRETS/$1"
  if [ ! -s "$file" ]; then
    mkdir -p -m 700 "$SECRETS" && chmod 700 "$SECRETS"
    local fresh; fresh="$(mktemp "$SECRETS/.new.XXXXXX")"
    if [ "${FMHL_ADOPT_CHECKOUT_SECRETS:-yes}" = yes ] && [ -s "$RUN/$1" ]; then cat "$RUN/$1" > "$fresh"
    elif [ "${2:-}" = fernet ]; then
      "$PY_BOOT" -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' > "$fresh"
    else "$PY_BOOT" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$fresh"; fi
    ln "$fresh" "$file" 2>/dev/null || true
    rm -f "$fresh"
  fi
  cat "$file"
}
PY_BOOT="$(command -v python3)"

role_of() { local prefix="${PREFIX//-/_}"; echo "${prefix}_${1//-/_}"; }
user_of() { local prefix="${PREFIX//_/-}"; echo "${prefix}-$1"; }

# The secrets several services share, from the machine's secrets: JWT_SECRET, TOTP_ENCRYPTION_KEY,
# DLQ_RETRY_SIGNING_KEY (the two doubled to the length their settings require).
shared_secrets() {
  JWT_SECRET="$(secret jwt-secret)$(secret jwt-secret)"
  TOTP_ENCRYPTION_KEY="$(secret totp-encryption-key fernet)"
  DLQ_RETRY_SIGNING_KEY="$(secret dlq-retry-signing-key)$(secret dlq-retry-signing-key)"
}

# The operator's environment (migrations, CLI, demo, tests): the broker administrator and the tables' owner.
env_file() {
  local db_password mq_password jwt_secret totp_key signing_key
  db_password="$(secret db-password)"
  mq_password="$(secret mq-password)"
  shared_secrets
  jwt_secret="$JWT_SECRET"
  totp_key="$TOTP_ENCRYPTION_KEY"
  signing_key="$DLQ_RETRY_SIGNING_KEY"
  mkdir -p "$RUN/exports" "$RUN/mail"
  (umask 077; cat > "$RUN/stack.env" <<ENV
DATABASE_URL=postgresql+asyncpg://fmhl:${db_password}@127.0.0.1:5432/${DATABASE}
RABBITMQ_URL=amqp://fmhl:${mq_password}@127.0.0.1:5672/${VHOST}
RABBITMQ_MANAGEMENT_URL=http://fmhl:${mq_password}@127.0.0.1:15672
TEST_DATABASE_URL=postgresql+asyncpg://fmhl:${db_password}@127.0.0.1:5432/fmhl_test
TEST_SCHEMA_DATABASE_URL=postgresql+asyncpg://fmhl:${db_password}@127.0.0.1:5432/fmhl_test_schema
TEST_RABBITMQ_URL=amqp://fmhl:${mq_password}@127.0.0.1:5672/fmhl-test
JWT_SECRET=${jwt_secret}
TOTP_ENCRYPTION_KEY=${totp_key}
DLQ_RETRY_SIGNING_KEY=${signing_key}
EXPORT_DIR=$RUN/exports
SMTP_HOST=127.0.0.1
SMTP_PORT=${SMTP_SINK_PORT}
MAIL_DIR=$RUN/mail
ENV
  )
  chmod 600 "$RUN/stack.env"
}

# Each service's own environment: its broker user, its database role, and the shared settings it needs
# (JWT_SECRET, ... as variables: load_env or shared_secrets first).
# `service_env_files DIR DB_HOST MQ_HOST [SECRETS_ONLY]`: where PostgreSQL and RabbitMQ answer (compose: their
# container names); SECRETS_ONLY leaves out the settings a compose file sets itself (paths, SMTP).
service_env_files() {
  local dir="$1" db_host="$2" mq_host="$3" secrets_only="${4:-}"
  mkdir -p -m 700 "$dir"
  for service in "${SERVICES[@]}"; do
    (
      umask 077
      {
        echo "DATABASE_URL=postgresql+asyncpg://$(role_of "$service"):$(secret "db-$service")@$db_host:5432/$DATABASE"
        echo "RABBITMQ_URL=amqp://$(user_of "$service"):$(secret "mq-$service")@$mq_host:5672/$VHOST"
        if [ "$service" = dlq-service ]; then
          echo "RABBITMQ_MANAGEMENT_URL=http://$(user_of "$service-monitoring"):$(secret "mq-$service-monitoring")@$mq_host:15672"
          # The console's scheduled-jobs page acts through the scheduler's admin API.
          echo "SCHEDULER_URL=http://$([ "$mq_host" = 127.0.0.1 ] && echo "127.0.0.1:${PORTS[scheduler]}" || echo "scheduler:8080")"
        fi
        for name in ${SETTINGS[$service]}; do
          case "$secrets_only:$name" in secrets-only:EXPORT_DIR|secrets-only:SMTP_*) continue ;; esac
          echo "$name=${!name}"
        done
      } > "$dir/$service.env.new"
    )
    mv "$dir/$service.env.new" "$dir/$service.env"
  done
}

load_env() { set -a; . "$RUN/stack.env"; set +a; }

# ---- installation ------------------------------------------------------------------------------
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and starts system services)"
  # chromium and chromium-driver: the console's browser tests run Debian's headless Chromium (no browser download);
  # iproute2: the cluster tests put each RabbitMQ node in a network namespace of its own, to partition one.
  apt_install rabbitmq-server postgresql postgresql-contrib prometheus prometheus-alertmanager curl chromium chromium-driver wrk iproute2
  if [ ! -x "$PY" ]; then
    say "creating the virtualenv in .venv"
    "$PY_BOOT" -m venv "$VENV"
  fi
  local stamp="$VENV/.lock-installed"
  if [ ! -f "$stamp" ] || ! cmp -s "$ROOT/requirements-dev.lock" "$stamp"; then
    say "installing Python dependencies from requirements-dev.lock"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.lock"
    cp "$ROOT/requirements-dev.lock" "$stamp"
  fi
  # The libs and the six service packages are imported from the work tree (no build step).
  local site
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  {
    echo "$ROOT"
    for service in "${SERVICES[@]}"; do echo "$ROOT/services/$service"; done
  } > "$site/fmhl-ops.pth"
}

# ---- RabbitMQ and PostgreSQL -------------------------------------------------------------------
rabbitmq_running() { rabbitmqctl -q status >/dev/null 2>&1; }

start_rabbitmq() {
  if ! rabbitmq_running; then
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    touch "$RUN/started-rabbitmq"
  fi
  # `rabbitmq-server -detached` returns before the Erlang node registers with epmd, and
  # await_startup fails at once on a node it cannot reach, so first wait for it to answer.
  for _ in $(seq 1 90); do rabbitmq_running && break; sleep 1; done
  if ! rabbitmq_running; then
    tail -n 40 /var/log/rabbitmq/*.log 2>/dev/null || true
    die "RabbitMQ did not start within 90 s (log above, from /var/log/rabbitmq)"
  fi
  rabbitmqctl -q await_startup --timeout 60 >/dev/null
  rabbitmq-plugins -q enable rabbitmq_management rabbitmq_prometheus >/dev/null
  local password; password="$(secret mq-password)"
  rabbitmqctl -q add_user fmhl "$password" >/dev/null 2>&1 || rabbitmqctl -q change_password fmhl "$password" >/dev/null
  rabbitmqctl -q set_user_tags fmhl administrator >/dev/null
  for vhost in "$VHOST" fmhl-test; do
    rabbitmqctl -q add_vhost "$vhost" >/dev/null 2>&1 || true
    rabbitmqctl -q set_permissions -p "$vhost" fmhl '.*' '.*' '.*' >/dev/null
  done
  # The management listener comes up a few seconds after the plugin is enabled; slow machines need longer.
  for _ in $(seq 1 90); do
    curl -fsS -o /dev/null -u "fmhl:$password" http://127.0.0.1:15672/api/overview 2>/dev/null && return 0
    sleep 1
  done
  die "RabbitMQ management API did not answer on 127.0.0.1:15672"
}

postgres_running() { pg_isready -q -h 127.0.0.1 -p 5432; }
psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt "$@"; }

# deploy/postgres/fmhl.conf, the server settings every deployment shares, goes in the cluster's conf.d (Debian's
# postgresql.conf includes it). A running cluster restarts to take a changed file: shared_buffers is read at start.
configure_postgres() {
  local conf="/etc/postgresql/$1/main/conf.d/fmhl.conf"
  cmp -s "$ROOT/deploy/postgres/fmhl.conf" "$conf" && return 1
  # `command`: this script has an install() of its own.
  command install -m 644 "$ROOT/deploy/postgres/fmhl.conf" "$conf"
}

start_postgres() {
  local version; version="$(pg_lsclusters -h | awk 'NR==1 {print $1}')"
  [ -n "$version" ] || die "no PostgreSQL cluster found (pg_lsclusters is empty)"
  if configure_postgres "$version" && postgres_running; then
    say "restarting PostgreSQL with deploy/postgres/fmhl.conf"
    pg_ctlcluster "$version" main restart
  fi
  if ! postgres_running; then
    say "starting PostgreSQL"
    pg_ctlcluster "$version" main start
    echo "$version" > "$RUN/started-postgres"
  fi
  for _ in $(seq 1 30); do postgres_running && break; sleep 1; done
  postgres_running || die "PostgreSQL did not accept connections on 127.0.0.1:5432"
  local password; password="$(secret db-password)"
  if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'fmhl'")" != 1 ]; then
    psql_admin -c "CREATE ROLE fmhl LOGIN"
  fi
  psql_admin -c "ALTER ROLE fmhl PASSWORD '$password'"
  # fmhl_test_schema: migrated from scratch by the schema drift test, compared with the models.
  for db in "$DATABASE" fmhl_test fmhl_test_schema; do
    if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
      psql_admin -c "CREATE DATABASE $db OWNER fmhl"
    fi
  done
}

infra() { env_file; start_rabbitmq; start_postgres; }

migrate() {
  load_env
  say "applying migrations"
  (cd "$ROOT" && "$VENV/bin/alembic" upgrade head >/dev/null)
  (cd "$ROOT" && DATABASE_URL="$TEST_DATABASE_URL" "$VENV/bin/alembic" upgrade head >/dev/null)
  # The test vhost gets the topology only: the tests run their service processes as the administrator.
  (cd "$ROOT" && RABBITMQ_URL="$TEST_RABBITMQ_URL" "$PY" -m libs.messaging.permissions declare)
  provision
}

# After every migration (a new table is closed to every service until libs/db/grants.py declares it):
# the topology, each service's broker user and database role with its password and grants, its env file.
provision() {
  load_env
  say "provisioning each service's broker user and database role"
  for service in "${SERVICES[@]}"; do secret "db-$service" >/dev/null; secret "mq-$service" >/dev/null; done
  secret mq-dlq-service-monitoring >/dev/null
  (cd "$ROOT" && "$PY" -m libs.messaging.permissions apply --secrets "$SECRETS" --prefix "$PREFIX")
  # Creating roles needs a superuser; the script carries SCRAM verifiers, never a password in clear.
  (cd "$ROOT" && "$PY" -m libs.db.grants sql --secrets "$SECRETS" --prefix "$PREFIX") | psql_admin -1 -d "$DATABASE"
  service_env_files "$RUN/env" 127.0.0.1 127.0.0.1
}

# ---- the six services --------------------------------------------------------------------------
pid_of() { local f="$RUN/pids/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

start_smtp_sink() {
  pid_of smtp-sink >/dev/null && return 0
  (cd "$ROOT" && exec setsid "$PY" deploy/local/smtp_sink.py "$MAIL_DIR" "$SMTP_PORT" \
    >> "$RUN/logs/smtp-sink.log" 2>&1 < /dev/null) &
  echo $! > "$RUN/pids/smtp-sink.pid"
}

start_services() {
  load_env
  start_smtp_sink
  local operator; operator="$(sed -n 's/=.*//p' "$RUN/stack.env")"
  for service in "${SERVICES[@]}"; do
    if pid_of "$service" >/dev/null; then continue; fi
    [ -s "$RUN/env/$service.env" ] || die "no credentials for $service: run 'stack.sh migrate' first"
    # Another process on the port (another checkout's stack) would answer the readiness checks below for it.
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORTS[$service]}") 2>/dev/null; then
      die "port ${PORTS[$service]} for $service is taken by another process (another checkout's stack? 'stack.sh down' there)"
    fi
    # Only its own credentials and settings: the operator's (administrator's) variables are not inherited.
    # exec: the recorded pid is the service's own; setsid: it outlives this shell and its terminal.
    # shellcheck disable=SC2086
    (cd "$ROOT" && unset $operator && set -a && . "$RUN/env/$service.env" && set +a \
      && export HTTP_PORT="${PORTS[$service]}" \
      && exec setsid "$PY" -m "${MODULES[$service]}" >> "$RUN/logs/$service.log" 2>&1 < /dev/null) &
    echo $! > "$RUN/pids/$service.pid"
  done
  local deadline=$((SECONDS + 90))
  for service in "${SERVICES[@]}"; do
    until pid_of "$service" >/dev/null && curl -fs -o /dev/null "http://127.0.0.1:${PORTS[$service]}/health/ready"; do
      pid_of "$service" >/dev/null || { tail -n 20 "$RUN/logs/$service.log" >&2; die "$service exited"; }
      [ $SECONDS -lt $deadline ] || { tail -n 20 "$RUN/logs/$service.log" >&2; die "$service not ready in 90 s"; }
      sleep 0.5
    done
  done
}

status() {
  printf '%-20s %-7s %-6s %-36s %s\n' SERVICE PID READY HEALTH METRICS
  for service in "${SERVICES[@]}"; do
    local port="${PORTS[$service]}" pid ready
    pid="$(pid_of "$service" || echo -)"
    ready="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/ready" || true)"
    printf '%-20s %-7s %-6s %-36s %s\n' "$service" "$pid" "$ready" \
      "http://127.0.0.1:$port/health/ready" "http://127.0.0.1:$port/metrics"
  done
  echo
  local api="http://127.0.0.1:${PORTS[ingest-gateway]}"
  echo "API:        $api/api/v1   (OpenAPI: $api/schema)"
  echo "RabbitMQ:   http://127.0.0.1:15672 (administrator fmhl, password in $SECRETS/mq-password), metrics :15692/metrics"
  echo "PostgreSQL: 127.0.0.1:5432 database $DATABASE (owner fmhl, password in $SECRETS/db-password)"
  echo "Services:   each as its own broker user and database role, credentials in .run/env/<service>.env"
  echo "Mail sink:  smtp://127.0.0.1:$SMTP_SINK_PORT -> .run/mail/*.eml, listed in .run/mail/index.jsonl"
  echo "Exports:    .run/exports/"
  echo "Logs:       .run/logs/<service>.log   (task logs)"
}

stop_services() {
  for service in "${SERVICES[@]}" smtp-sink; do
    local pid; pid="$(pid_of "$service" || true)"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for service in "${SERVICES[@]}" smtp-sink; do
    local pid; pid="$(pid_of "$service" || true)"
    for _ in $(seq 1 50); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN/pids/$service.pid"
  done
}

down() {
  if docker_engine; then compose down; return; fi
  stop_services
  # RabbitMQ and PostgreSQL are stopped only when this script started them.
  if [ -f "$RUN/started-rabbitmq" ]; then rabbitmqctl -q stop >/dev/null 2>&1 || true; rm -f "$RUN/started-rabbitmq"; fi
  if [ -f "$RUN/started-postgres" ]; then
    pg_ctlcluster "$(cat "$RUN/started-postgres")" main stop || true
    rm -f "$RUN/started-postgres"
  fi
  say "stopped"
}

docker_engine() { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }

# docker-compose.yml's env files in DIR, from the machine-wide secrets (FMHL_SECRETS_DIR): compose.env the
# administrators' passwords (the images and the one-shot migrate and provision) and FMHL_COMPOSE_ENV_DIR;
# provision.env every service's password (FMHL_SECRET_<NAME>) for the one-shot that creates the users and
# roles; <service>.env a service's own broker user, database role and secrets, its env_file and only credentials.
compose_env() {
  local dir="${1:-$RUN/compose}"
  mkdir -p -m 700 "$dir"
  dir="$(cd "$dir" && pwd)"
  shared_secrets
  (
    umask 077
    printf 'FMHL_DB_PASSWORD=%s\nFMHL_MQ_PASSWORD=%s\nFMHL_COMPOSE_ENV_DIR=%s\n' \
      "$(secret db-password)" "$(secret mq-password)" "$dir" > "$dir/compose.env"
    for service in "${SERVICES[@]}"; do
      for name in "db-$service" "mq-$service"; do
        echo "FMHL_SECRET_$(echo "${name//-/_}" | tr '[:lower:]' '[:upper:]')=$(secret "$name")"
      done
    done > "$dir/provision.env"
    echo "FMHL_SECRET_MQ_DLQ_SERVICE_MONITORING=$(secret mq-dlq-service-monitoring)" >> "$dir/provision.env"
  )
  service_env_files "$dir" postgres rabbitmq secrets-only
  echo "$dir/compose.env"
}

# deploy/k8s's Secrets as env files in DIR, from the machine-wide secrets, and the kubectl commands that create
# them: fmhl-<service> a service's own passwords (its user's and role's; the URLs are built in the manifests from
# the ConfigMap's hosts) and the secrets it needs; fmhl-admin the administrators' URLs at DB_HOST and MQ_HOST,
# for the migrate and provision Jobs (the production overlay takes them from the operators instead).
k8s_env() {
  local dir="${1:-$RUN/k8s}" namespace="${2:-fmhl-local}" db_host="${3:-postgres}" mq_host="${4:-rabbitmq}"
  mkdir -p -m 700 "$dir"
  dir="$(cd "$dir" && pwd)"
  shared_secrets
  (
    umask 077
    for service in "${SERVICES[@]}"; do
      {
        echo "DATABASE_PASSWORD=$(secret "db-$service")"
        echo "RABBITMQ_PASSWORD=$(secret "mq-$service")"
        [ "$service" = dlq-service ] && echo "RABBITMQ_MONITORING_PASSWORD=$(secret "mq-$service-monitoring")"
        for name in ${SETTINGS[$service]}; do
          case "$name" in EXPORT_DIR|SMTP_*) continue ;; esac
          echo "$name=${!name}"
        done
      } > "$dir/$service.env"
    done
    cat > "$dir/admin.env" <<ENV
DATABASE_URL=postgresql+asyncpg://fmhl:$(secret db-password)@$db_host:5432/$DATABASE
RABBITMQ_URL=amqp://fmhl:$(secret mq-password)@$mq_host:5672/$VHOST
RABBITMQ_MANAGEMENT_URL=http://fmhl:$(secret mq-password)@$mq_host:15672
ENV
  )
  echo "kubectl create namespace $namespace   # or apply the overlay once; then:"
  echo "kubectl -n $namespace create secret generic fmhl-admin --from-env-file=$dir/admin.env   # local overlay only"
  for service in "${SERVICES[@]}"; do
    echo "kubectl -n $namespace create secret generic fmhl-$service --from-env-file=$dir/$service.env"
  done
}

# .run/stack.env too: the operator's environment (demo, CLI) reaches compose's PostgreSQL on its published port.
compose() {
  env_file
  local env_file; env_file="$(compose_env "$RUN/compose")"
  (cd "$ROOT" && docker compose --env-file "$env_file" "$@")
}

# The console's first admin, created once per database by the admin-cli one-shot (as the tables' owner), its
# password piped in; the password stays in the secrets directory, the TOTP secret is shown once, here.
first_admin() {
  local email="${FMHL_ADMIN_EMAIL:-admin@fmhl.local}" password created
  password="$(secret admin-password)"
  if ! created="$(printf '%s\n' "$password" | compose run --rm -T admin-cli create-user \
      --email "$email" --role admin --password-file - 2>&1)"; then
    if grep -q -i "unique" <<< "$created"; then
      say "the admin $email exists already: password in $SECRETS/admin-password, TOTP in the authenticator it was given"
      return 0
    fi
    printf '%s\n' "$created" | tail -n 5 >&2
    die "creating the first admin failed"
  fi
  local uri; uri="$(sed -n 's/^otpauth_uri=//p' <<< "$created")"
  say "first admin created: $email, password in $SECRETS/admin-password (root only)"
  # To the terminal only (stderr, never a file or a log): the TOTP secret cannot be shown again.
  say "  add this to an authenticator app (TOTP, shown once): $uri"
  say "  log in: POST http://127.0.0.1:${FMHL_GATEWAY_PORT:-8000}/api/v1/auth/token {email, password, totp_code}"
  say "  console: http://127.0.0.1:${FMHL_DLQ_PORT:-8001}/console (the same email, password and code)"
}

up() {
  if docker_engine; then
    say "Docker engine found: docker compose up"
    compose up -d --build --wait
    compose ps
    first_admin
    say "demo against it: stack.sh demo (the stack's published ports; mails stay in the smtp-sink's volume)"
    return
  fi
  install
  infra
  migrate
  say "starting the six services"
  start_services
  status
  demo
  # The demo admin's password and TOTP secret were printed above by the demo, to this terminal only.
  say "operations console: http://127.0.0.1:${PORTS[dlq-service]}/console"
  say "  log in as the demo admin above: its email, its password, and the code its TOTP secret gives now:"
  say "  $PY -c 'import pyotp, sys; print(pyotp.TOTP(sys.argv[1]).now())' <the TOTP secret printed above>"
}

demo() {
  load_env
  say "demo: driving the running stack"
  # Under compose the services answer on the same published ports, but the mails stay in the sink's volume.
  if docker_engine; then unset MAIL_DIR; fi
  (cd "$ROOT" && RUN_DIR="$RUN" "$PY" deploy/local/demo.py)
}

run_tests() {
  install
  infra
  migrate
  load_env
  say "running the test suite"
  cd "$ROOT"
  "$VENV/bin/python" -m pytest "$@"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) load_env 2>/dev/null || true; status ;;
  logs) tail -n 50 -F "$RUN"/logs/*.log ;;
  install) install ;;
  infra) install; infra ;;
  migrate) migrate ;;
  credentials) env_file; provision ;;
  compose-env) compose_env "${2:-$RUN/compose}" ;;
  k8s-env) shift; k8s_env "$@" ;;
  restart) stop_services; start_services; status ;;
  demo) demo ;;
  test) shift; run_tests "$@" ;;
  *) echo "usage: $0 up | down | status | logs | migrate | install | infra | credentials | restart | demo | test [args] | compose-env [DIR] | k8s-env [DIR] [NAMESPACE] [DB_HOST] [MQ_HOST]" >&2
     exit 2 ;;
esac
