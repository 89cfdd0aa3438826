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
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
go build -ldflags "-X github.com/petrel-edge/petrel/internal/version.Commit=$commit" -o bin/petrel ./cmd/petrel
exec bin/petrel lab up "$@"
