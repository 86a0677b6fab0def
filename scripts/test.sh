#!/usr/bin/env bash
# The test command: installs what is missing (docker.io, memcached, the Perl clients used as
# reference implementations), starts dockerd when it is not running, builds the local
# memcached image, then runs fmt, clippy, doc, and every test (unit, integration, doc).
# Containers started by the tests are labelled and removed at the end, also after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v memcached >/dev/null 2>&1 || need_apt+=(memcached)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v perl >/dev/null 2>&1 || need_apt+=(perl)
command -v nutcracker >/dev/null 2>&1 || need_apt+=(nutcracker)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
perl -MCache::Memcached -e1 2>/dev/null || need_apt+=(libcache-memcached-perl)
perl -MCache::Memcached::Fast -e1 2>/dev/null || need_apt+=(libcache-memcached-fast-perl)
perl -MMemcached::libmemcached -e1 2>/dev/null || need_apt+=(libmemcached-libmemcached-perl)
command -v nutcracker >/dev/null 2>&1 || need_apt+=(nutcracker)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need_apt[*]} — install them with apt-get (as root) and run again" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

scripts/ensure-docker.sh
scripts/memcached-image.sh

sweep() {
  ids=$(docker ps -aq --filter label=memsem-test 2>/dev/null || true)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
}
sweep
trap sweep EXIT

cargo fmt --all -- --check
# Lint and document the library alone (its default features) and the whole workspace.
cargo clippy -p memsem --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc -p memsem --no-deps --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet --all-features
# The unit tests and doctests of the library and the CLI need no server.
cargo test -p memsem -p memsem-cli --all-features
# The integration suite runs the `memsem` binary and the helper examples: build them first.
cargo build --workspace --all-features --bins --examples
cargo test -p memsem-tests --all-features --test it
# A smoke-sized run of every benchmark scenario, to keep the benchmark compiling and working.
cargo test -p memsem-tests --all-features --bench scenarios
