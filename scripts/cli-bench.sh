#!/usr/bin/env bash
# What a lock costs a short job: the median wall time of N runs each of
# `memsem run NAME -- true`, plain `true`, and `flock LOCKFILE true`, against a memcached
# started here on a free loopback port.
#
# Usage: scripts/cli-bench.sh [RUNS]   (default 20; needs /usr/bin/memcached and flock)
set -euo pipefail

runs=${1:-20}
cd "$(dirname "$0")/.."

memcached=${MEMCACHED:-/usr/bin/memcached}
[ -x "$memcached" ] || { echo "no memcached at $memcached (apt-get install memcached)" >&2; exit 69; }

cargo build --quiet --release --bin memsem
target=${CARGO_TARGET_DIR:-target}
memsem="$target/release/memsem"

# A free port: one nothing answers on.
port=
for _ in $(seq 50); do
    candidate=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
[ -n "$port" ] || { echo "no free port found" >&2; exit 69; }

user_args=()
[ "$(id -u)" = 0 ] && user_args=(-u root)
"$memcached" "${user_args[@]}" -l 127.0.0.1 -p "$port" &
memcached_pid=$!
scratch=$(mktemp -d)
trap 'kill "$memcached_pid" 2>/dev/null; rm -rf "$scratch"' EXIT

export MEMSEM_SERVERS="127.0.0.1:$port"
export MEMSEM_LOCK_DELAY=0 # a memcached started here: no earlier locks
for _ in $(seq 100); do
    "$memsem" -q ping >/dev/null 2>&1 && break
    sleep 0.05
done

# Median wall time, in milliseconds (bash's EPOCHREALTIME: no process to read the clock), of running "$@" $runs times.
median_ms() {
    local times=() start end
    for _ in $(seq "$runs"); do
        start=${EPOCHREALTIME/[.,]/}
        "$@" >/dev/null
        end=${EPOCHREALTIME/[.,]/}
        times+=($((end - start)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '
        { v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m / 1000 }'
}

# The external true(1), not the shell builtin: every line starts a process.
true_bin=$(type -P true)

echo "median of $runs runs (memcached 127.0.0.1:$port, $("$memsem" --version))"
printf '%-34s %8s ms\n' "memsem run bench -- true" "$(median_ms "$memsem" run bench -- "$true_bin")"
printf '%-34s %8s ms\n' "true" "$(median_ms "$true_bin")"
printf '%-34s %8s ms\n' "flock LOCKFILE true" "$(median_ms flock "$scratch/lock" "$true_bin")"
