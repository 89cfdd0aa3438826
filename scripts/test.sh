#!/usr/bin/env bash
# The whole Petrel test suite: what CI runs (.ci/run) and what a developer runs.
# Installs what it needs (idempotently), then runs each stage of the CI budget
# in ENGINEERING.md and prints its time. Run as root on a fresh machine:
#   sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
export PATH="$(go env GOPATH)/bin:$PATH"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
STATICCHECK_VERSION=2026.1 # honnef.co/go/tools v0.8.2
STATICCHECK_MODULE=honnef.co/go/tools/cmd/staticcheck@v0.8.2

declare -a SUMMARY=()
LOGDIR=$(mktemp -d /tmp/petrel-test-logs.XXXXXX)

# gotest runs go test -v, keeps the full output in LOGDIR, shows package
# verdicts and failures, and on failure the end of the output.
gotest() { # gotest LOGNAME ARGS...
  local log="$LOGDIR/$1.log"; shift
  local rc=0
  go test -v "$@" >"$log" 2>&1 || rc=$?
  grep -E '^(ok|FAIL|\?|--- FAIL|panic:)' "$log" | grep -v 'no test files' || true
  if [ "$rc" != 0 ]; then
    # Each failed top-level test's own output (its last 150 lines), then
    # the end of the whole log (a panic or a timeout is there).
    local name
    for name in $(grep -E '^--- FAIL: ' "$log" | awk '{print $3}' | sort -u); do
      echo "--- the output of $name (the last 150 lines):"
      awk -v n="$name" '$0 == "=== RUN   " n {on=1} on {print} on && index($0, "--- FAIL: " n " ") == 1 {on=0}' "$log" |
        grep -v -E '^(=== (RUN|PAUSE|CONT|NAME)|--- PASS)' | tail -n 150
    done
    echo "--- go test failed (exit $rc); the end of its output ($log):"
    grep -v -E '^(=== (RUN|PAUSE|CONT|NAME)|--- PASS|PASS$)' "$log" | tail -n 60
  fi
  return "$rc"
}
stage() { # stage NAME BUDGET_S COMMAND...
  local name=$1 budget=$2; shift 2
  local t0=$SECONDS
  echo "=== stage: $name (budget ${budget}s)"
  "$@"
  local dt=$((SECONDS - t0))
  local note="ok"
  [ "$dt" -gt "$budget" ] && note="OVER BUDGET"
  SUMMARY+=("$(printf '%-28s %5ss / %5ss  %s' "$name" "$dt" "$budget" "$note")")
  echo "=== stage: $name took ${dt}s (budget ${budget}s)"
}

install() {
  local missing=()
  [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql)
  command -v git >/dev/null || missing+=(git)
  command -v runuser >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v iptables >/dev/null || missing+=(iptables)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs npm)
  # BMC protocols: foreign clients and OpenIPMI's ipmi_sim as a foreign BMC.
  command -v ipmitool >/dev/null || missing+=(ipmitool)
  command -v ipmi_sim >/dev/null || missing+=(openipmi)
  command -v redfishtool >/dev/null || missing+=(redfishtool)
  # Compute (notes/vm-disk-images.md): test guest images are built from
  # Debian packages (dosfstools, mtools, syslinux; the kernel and
  # busybox-static .debs are fetched with apt-get download by the build and
  # cached in /var/cache/petrel/guest), booted by QEMU (TCG) and by private
  # libvirtd daemons under tini. No recommends: they pull lvm2, GUI, firmware.
  local norec=()
  command -v mkfs.fat >/dev/null || norec+=(dosfstools)
  command -v mcopy >/dev/null || norec+=(mtools)
  command -v syslinux >/dev/null || norec+=(syslinux syslinux-common)
  command -v qemu-system-x86_64 >/dev/null || norec+=(qemu-system-x86)
  command -v qemu-img >/dev/null || norec+=(qemu-utils)
  [ -x /usr/sbin/libvirtd ] || norec+=(libvirt-daemon)
  [ -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ] || norec+=(libvirt-daemon-driver-qemu)
  command -v virsh >/dev/null || norec+=(libvirt-clients)
  command -v tini >/dev/null || norec+=(tini)
  # The OpenStack-compatible API's black-box test drives the real CLI.
  command -v openstack >/dev/null || norec+=(python3-openstackclient)
  # Site bring-up (deploy/ansible, docs/deploy.md): Ansible runs the
  # playbooks against bare lab machines, whose OS is an sshd.
  command -v ansible-playbook >/dev/null || norec+=(ansible-core)
  command -v ansible-lint >/dev/null || missing+=(ansible-lint)
  [ -x /usr/sbin/sshd ] || norec+=(openssh-server)
  if [ $((${#missing[@]} + ${#norec[@]})) -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "scripts/test.sh: missing Debian packages: ${missing[*]} ${norec[*]} (run as root to install them)" >&2
      exit 1
    fi
    apt-get update -qq
    [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ ${#norec[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${norec[@]}" >/dev/null
  fi
  # libvirtd's QEMU driver will not load without its compiled-in user
  # (normally created by libvirt-daemon-system, which we do not install).
  [ "$(id -u)" != 0 ] || getent passwd libvirt-qemu >/dev/null || useradd -r -U -M -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
  go mod download
  # Browser tests only: the product has no npm dependency.
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
  fi
  if ! staticcheck -version 2>/dev/null | grep -q "$STATICCHECK_VERSION"; then
    GOFLAGS= go install "$STATICCHECK_MODULE"
  fi
}

build() {
  local unformatted
  unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
  if [ -n "$unformatted" ]; then
    echo "gofmt would change:"; echo "$unformatted"; exit 1
  fi
  go build ./...
  go vet ./...
  staticcheck ./...
  # The deploy playbooks (ansible-lint's production profile).
  (cd deploy/ansible && ANSIBLE_NOCOLOR=1 ansible-lint --nocolor -p -q bootstrap.yml roles)
}

# deploy's tests run ansible-playbook: they belong to the ansible stage.
PKGS_UNIT=$(go list ./... | grep -v -e '/cmd/petrel$' -e '/deploy$')
unit() {
  # The race detector on every package but the end-to-end one (which runs
  # real processes); nothing here hammers SQLite yet. lab/hostnet builds real
  # namespaces and cgroups (root).
  gotest unit -race -count=1 $PKGS_UNIT
}

PGDIR=""
cleanup() { [ -n "$PGDIR" ] && scripts/postgres.sh stop "$PGDIR"; return 0; }
trap cleanup EXIT
conformance() {
  PGDIR=$(mktemp -d /tmp/petrel-pg.XXXXXX)
  local dsn
  dsn=$(scripts/postgres.sh start "$PGDIR")
  PETREL_TEST_DB=sqlite,postgres PETREL_TEST_POSTGRES_DSN="$dsn" gotest conformance -count=1 -run Conformance ./...
  scripts/postgres.sh stop "$PGDIR"; PGDIR=""
}

e2e() {
  # go test's default 10-minute timeout is shorter than this stage's budget.
  gotest e2e -count=1 -timeout 25m -skip 'TestBrowser|TestFaultMatrix|TestAnsible|TestSubcloudDeployFromCentral' ./cmd/petrel
}

# Site bring-up (docs/deploy.md): deploy/ansible against bare lab machines,
# by hand and from central's deploy engine.
ansible_stage() {
  gotest ansible-values -count=1 ./deploy
  gotest ansible -count=1 -timeout 15m -run 'TestAnsible|TestSubcloudDeployFromCentral' ./cmd/petrel
}

# The fault-matrix slot (ENGINEERING.md): seeded fault sequences against a
# controller pair, as many seeds as fit (docs/ha.md).
faultmatrix() {
  PETREL_FAULT_BUDGET=${PETREL_FAULT_BUDGET:-5m} gotest faultmatrix -count=1 -timeout 20m -run TestFaultMatrix ./cmd/petrel
}

browser() {
  gotest browser -count=1 -run TestBrowser ./cmd/petrel
}

stage "installs" 300 install
stage "build, vet, staticcheck" 360 build
stage "unit tests (-race)" 480 unit
stage "store conformance" 120 conformance
stage "end-to-end (CLI, lab)" 1200 e2e
stage "fault matrix" 480 faultmatrix
stage "browser tests" 240 browser
stage "ansible" 300 ansible_stage

echo
echo "=== stage times"
printf '%s\n' "${SUMMARY[@]}"
# Top-level tests only (subtests are indented); the logs are in $LOGDIR.
passed=$(cat "$LOGDIR"/*.log | grep -c '^--- PASS' || true)
failed=$(cat "$LOGDIR"/*.log | grep -c '^--- FAIL' || true)
echo "tests: ${passed} passed, ${failed} failed"
