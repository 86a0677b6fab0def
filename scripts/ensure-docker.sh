#!/usr/bin/env bash
# Makes sure a Docker engine answers; installs docker.io and starts dockerd when needed.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "Docker is missing and this is not root: install docker.io (apt-get install docker.io) and start dockerd" >&2
    exit 1
  fi
  echo "installing docker.io ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd in the background (log: /tmp/memsem-dockerd.log) ..." >&2
  nohup dockerd >/tmp/memsem-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
  done
  echo "dockerd did not come up within 30 s; see /tmp/memsem-dockerd.log" >&2
  exit 1
fi
