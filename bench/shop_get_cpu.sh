#!/usr/bin/env bash
# CPU time per cached GET /products/{id} of two shop builds, in alternating rounds, and
# of the bare axum baseline: a measure the neighbours' load disturbs far less than
# requests/s. Each round: a fresh throwaway PostgreSQL 15, the shop (no Redis, JSON logs,
# rate limits off), one product, `wrk -t2 -c32` for 8 s after a 2 s warm-up; CPU is the
# shop's utime + stime from /proc over the measured run.
# Usage: bench/shop_get_cpu.sh SHOP_A SHOP_B [rounds, default 3]
#   e.g. cp target/release/shop /tmp/shop-before; (change, build); bench/shop_get_cpu.sh /tmp/shop-before target/release/shop
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,9p "$0" >&2; exit 2; }
a=$1 b=$2 rounds=${3:-3}
bindir=/usr/lib/postgresql/15/bin
bare=./target/release/examples/bare_axum
[ -x "$bare" ] || cargo build --release -p shop --example bare_axum
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/shop-cpu-XXXX); chmod 755 "$work"
as_pg=(); if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); chown postgres "$work"; fi
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  [ -f "$work/data/postmaster.pid" ] && "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$work/data" -m fast -s
  rm -rf "$work"
}
trap cleanup EXIT

# CPU µs per request and req/s of process $1 under wrk against URL $2.
measure() {
  wrk -t2 -c32 -d2s "$2" >/dev/null
  local u0 s0 u1 s1 out reqs
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$1/stat")
  out=$(wrk -t2 -c32 -d8s "$2")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$1/stat")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v t=$((u1 + s1 - u0 - s0)) -v r="$reqs" -v hz="$(getconf CLK_TCK)" -v rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    'BEGIN { printf "%6.1f us/request  %8.0f req/s\n", t * 1e6 / hz / r, rps }'
}

pg_port=$(free_port)
"${as_pg[@]}" "$bindir/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" start -D "$work/data" -l "$work/pg.log" -w -s -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories='$work'"
body_size=
for round in $(seq "$rounds"); do
  for shop in "$a" "$b"; do
    db=r${round}_$RANDOM
    psql -h "$work" -p "$pg_port" -U postgres -qc "CREATE DATABASE $db"
    export DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/$db
    "$shop" migrate 2>/dev/null
    port=$(free_port)
    SHOP_BIND=127.0.0.1:$port SHOP_LOG_FORMAT=json SHOP_RATE_LOGIN=0 SHOP_RATE_REGISTER=0 SHOP_RATE_SEARCH=0 "$shop" serve 2>"$work/shop.log" &
    server=$!
    for _ in $(seq 100); do grep -q 'listening on' "$work/shop.log" && break; sleep 0.1; done
    base=http://127.0.0.1:$port
    call() { curl -sS --fail -X "$1" "$base$2" -H 'content-type: application/json' ${token:+-H "authorization: Bearer $token"} ${3:+-d "$3"}; }
    token=
    call POST /register '{"email":"s@bench.test","password":"bench-password","roles":"seller"}' >/dev/null
    token=$(call POST /login '{"email":"s@bench.test","password":"bench-password"}' | jq -r .token)
    shop_id=$(call POST /shops '{"name":"S"}' | jq -r .id)
    id=$(call POST /products "{\"shop_id\":$shop_id,\"name\":\"Espresso machine\",\"description\":\"15-bar pump, stainless steel boiler, steam wand and a 1.8 l removable water tank; descaling reminder; two-year warranty.\",\"price_cents\":1999,\"stock\":5}" | jq -r .id)
    body_size=$(curl -sS "$base/products/$id" | wc -c)
    echo "round $round $shop: $(measure "$server" "$base/products/$id")"
    kill "$server"; wait "$server" 2>/dev/null || true; server=
  done
  port=$(free_port)
  "$bare" "127.0.0.1:$port" "$body_size" >/dev/null 2>&1 &
  server=$!
  sleep 0.3
  echo "round $round bare axum: $(measure "$server" "http://127.0.0.1:$port/products/1")"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
done
