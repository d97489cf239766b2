#!/usr/bin/env bash
# Installs what the benchmarks need beyond the test dependencies: LiteLLM's proxy, the
# gateway benchmark's peer. Kept out of install-test-deps.sh because it is large (minutes of
# pip on this machine) and no test uses it. Idempotent: a second run only checks.
# LiteLLM lands in a venv of its own under $CORRAL_BENCHDEPS (default /opt/corral-benchdeps).
set -euo pipefail

bash "$(dirname "$0")/install-test-deps.sh"

PREFIX=${CORRAL_BENCHDEPS:-/opt/corral-benchdeps}
# Pinned: a LiteLLM release (1.107.0) was once published compromised, and the proxy extra of
# later ones needs a package PyPI does not have; take a new one deliberately.
LITELLM_VERSION=1.106.12

mkdir -p "$PREFIX"
if [ ! -x "$PREFIX/litellm/bin/python" ]; then
  /usr/bin/python3 -m venv "$PREFIX/litellm"
fi
installed="$("$PREFIX/litellm/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
if [ "$installed" != "$LITELLM_VERSION" ]; then
  "$PREFIX/litellm/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi
chmod -R a+rX "$PREFIX"

[ -x "$PREFIX/litellm/bin/litellm" ] || { echo "install-bench-deps: $PREFIX/litellm/bin/litellm is missing after install" >&2; exit 1; }
"$PREFIX/litellm/bin/python" -c 'import litellm.proxy.proxy_server' >/dev/null
echo "bench dependencies ready in $PREFIX"
