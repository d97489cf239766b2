#!/usr/bin/env bash
# Installs everything corral's tests need on a fresh machine of this kind (Debian, root).
# Idempotent: a second run only checks. Test clients land in /opt/corral-testdeps so that
# the ordinary users the tests create can run them too.
set -euo pipefail

PREFIX=${CORRAL_TESTDEPS:-/opt/corral-testdeps}

need_apt=()
want_apt() { for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p"); done; }

# --- shared: clients and tools the tests drive -------------------------------------
want_apt curl wget git dash iproute2 util-linux passwd tmux python3 python3-venv ca-certificates
# --- proxy: peer proxies for the benchmarks -----------------------------------------
want_apt squid tinyproxy
# --- sandbox: peer sandboxes for the benchmarks --------------------------------------
want_apt bubblewrap
# --- sandbox: the injected libraries of the foreign-code tests are built with cc
want_apt gcc libc6-dev
# --- node: Claude Code and the node client tests (Debian's nodejs and npm where none is installed)
command -v npm >/dev/null 2>&1 || want_apt nodejs npm

if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The peer proxies are started by the benchmarks themselves, never as system services.
for svc in squid tinyproxy; do
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
  service "$svc" stop >/dev/null 2>&1 || true
done

mkdir -p "$PREFIX"
# --- python clients (a venv of Debian's python, readable by every user) ---------------
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$PREFIX/venv"
fi
if ! "$PREFIX/venv/bin/python" -c 'import anthropic, boto3, requests' 2>/dev/null; then
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check anthropic boto3 requests
fi

# --- node clients ----------------------------------------------------------------------
# Claude Code is pinned: the scenario test asserts that it talks to nothing but the
# gateway, and a new release may behave differently. Bump deliberately, then run make test.
CLAUDE_CODE_VERSION=2.1.197
claude_package_json="$PREFIX/node/node_modules/@anthropic-ai/claude-code/package.json"
installed=""
if [ -f "$claude_package_json" ]; then
  installed="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$claude_package_json" | head -n 1)"
fi
if [ "$installed" != "$CLAUDE_CODE_VERSION" ]; then
  mkdir -p "$PREFIX/node"
  (cd "$PREFIX/node" && npm install --silent --no-audit --no-fund --prefix "$PREFIX/node" \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null)
fi

chmod -R a+rX "$PREFIX"

# --- check what the tests will look for, so a broken step fails here, with its name ---
for f in venv/bin/python node/node_modules/.bin/claude \
  node/node_modules/@anthropic-ai/claude-code-linux-x64/claude; do
  [ -e "$PREFIX/$f" ] || { echo "install-test-deps: $PREFIX/$f is missing after install" >&2; exit 1; }
done
"$PREFIX/venv/bin/python" -c 'import anthropic, boto3, requests'
echo "test dependencies ready in $PREFIX"
