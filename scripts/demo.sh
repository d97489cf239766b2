#!/usr/bin/env bash
# `make demo`: corral's main job, `corral run`, on loopback only.
#  1. with no --policy (the embedded default), every connection is refused with a 403 that
#     names binary, host and port and carries the YAML that would allow it;
#  2. with a policy that allows curl to reach the release mirror, curl inside the sandbox
#     downloads from it, while the same curl is still refused everywhere else;
#  3. `corral policy suggest` turns the logged refusal into the exact policy lines.
# Nothing leaves the machine: the mirror is corral's own, on 127.0.0.1, named
# mirror.corp.example with --connect-to (an address the operator vouches for).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin corral
corral=$PWD/target/debug/corral
[ -n "${CARGO_TARGET_DIR:-}" ] && corral=$CARGO_TARGET_DIR/debug/corral

work=$(mktemp -d /tmp/corral-demo.XXXXXX)
mirror_pid=
cleanup() { [ -n "$mirror_pid" ] && kill "$mirror_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
chmod 755 "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A release mirror on loopback (corral mirror serve)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '#!/bin/sh\necho "I am a stand-in for claude"\n' > "$work/claude"
"$corral" mirror add "$work/mirror" --version 1.0.0 --platform linux-x64 "$work/claude" >/dev/null
"$corral" mirror set-channel "$work/mirror" stable 1.0.0 >/dev/null
"$corral" mirror serve "$work/mirror" --listen "127.0.0.1:$port" --access-log "$work/access.log" 2>"$work/mirror.err" &
mirror_pid=$!
for _ in $(seq 50); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$port/stable" && break; sleep 0.1; done
echo "mirror.corp.example:$port -> 127.0.0.1:$port"

# corral's own files live in directories of their own, which the sandbox sees read-only;
# the sandboxed commands run in a project directory of their own (the default view lets
# them write it).
mkdir -p "$work/etc" "$work/logs" "$work/project"

step "corral run with the embedded default policy: everything is refused"
(cd "$work/project" && "$corral" run --log "$work/logs/default.log" --connect-to "mirror.corp.example:$port:127.0.0.1:$port" \
  -- curl -sS "http://mirror.corp.example:$port/stable") || true

step "A policy that lets curl reach the mirror (corral policy check)"
cat > "$work/etc/policy.yaml" <<YAML
version: 1
network_policies:
  mirror_downloads:
    endpoints:
      - { host: mirror.corp.example, port: $port }
    binaries:
      - { path: /usr/bin/curl }
YAML
cat "$work/etc/policy.yaml"
"$corral" policy check "$work/etc/policy.yaml"

step "corral run: curl may download from the mirror, and nothing else"
(cd "$work/project" && "$corral" run --policy "$work/etc/policy.yaml" --log "$work/logs/decisions.log" \
  --connect-to "mirror.corp.example:$port:127.0.0.1:$port" -- sh -c "
    echo '\$ curl http://mirror.corp.example:$port/stable'; curl -sS http://mirror.corp.example:$port/stable; echo
    echo '\$ curl http://unlisted.example/'; curl -sS http://unlisted.example/; echo
    echo '\$ python3 straight to 127.0.0.1:$port (no proxy)'
    python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $port))' 2>&1 | tail -1
  ") || true

step "The decision log (one JSON line per decision; docs/logs.md)"
cut -c1-160 "$work/logs/decisions.log"

step "corral policy suggest: the lines that would allow what was refused"
"$corral" policy suggest --from "$work/logs/decisions.log" --policy "$work/etc/policy.yaml"
