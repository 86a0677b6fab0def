#!/usr/bin/env bash
# Builds the local memcached test image from Debian's memcached binary (no registry needed).
# Usage: scripts/memcached-image.sh [TAG]   (default memsem-memcached:test)
set -euo pipefail
tag=${1:-memsem-memcached:test}
bin=$(command -v memcached || true)
[ -n "$bin" ] || bin=/usr/bin/memcached
if [ ! -x "$bin" ]; then
  echo "memcached binary not found: install it with 'apt-get install memcached'" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/usr/bin" "$ctx/root/etc" "$ctx/root/tmp"
cp "$bin" "$ctx/root/usr/bin/memcached"
# Every shared library the binary loads, at the same path, plus the dynamic loader.
ldd "$bin" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
  mkdir -p "$ctx/root$(dirname "$lib")"
  cp -L "$lib" "$ctx/root$lib"
done
printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n' > "$ctx/root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/root/etc/group"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
USER nobody
EXPOSE 11211
ENTRYPOINT ["/usr/bin/memcached", "-vv", "-l", "0.0.0.0", "-p", "11211"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag from $bin ($("$bin" -V))"
