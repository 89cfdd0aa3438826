#!/usr/bin/env bash
# Build Petrel and start the lab: a central cloud and sites of every shape on
# this machine. Prints the URLs and how to log in. Idempotent installs.
#   sudo scripts/run.sh [--sites site-sx=simplex,...] [--dir DIR]
# Stop it with: bin/petrel lab down
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
go mod download
# `petrel lab add-machine` and site bring-up with deploy/ansible (docs/deploy.md).
if [ "$(id -u)" = 0 ] && ! { command -v ansible-playbook && [ -x /usr/sbin/sshd ]; } >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ansible-core openssh-server >/dev/null
fi
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
go build -ldflags "-X github.com/petrel-edge/petrel/internal/version.Commit=$commit" -o bin/petrel ./cmd/petrel
exec bin/petrel lab up "$@"
