# Sourced by the other scripts. Python packages come through uv: the one on PATH, else one this script
# installs once into a small virtual environment of its own under the cache folder (never into the system
# Python, which Debian guards: PEP 668). uv's wheel cache (~/.cache/uv, or $UV_CACHE_DIR) makes building an
# environment from scratch take seconds once the wheels are cached; environments themselves are never
# shared between runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYBRID_CACHE=${HYBRID_CACHE:-$HOME/.cache/hybrid}  # the node script keeps OpenSearch here too
export HF_HUB_OFFLINE=1  # every model we use is bundled or local: never reach for a hub
# Trust the machine's certificate store, as pip and curl do: behind a proxy that inspects TLS, or with a
# company CA, uv's own bundled roots would refuse the package index.
export UV_SYSTEM_CERTS=${UV_SYSTEM_CERTS:-1}

# apt_install PACKAGE...: install Debian packages where we may (root with apt), else say what is missing.
apt_install() {
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing $* with apt-get" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "missing: $* (install with: sudo apt-get install $*)" >&2
    exit 1
  fi
}

# usable_uv PATH: PATH is a uv we can use: it answers, is 0.11 or newer (UV_SYSTEM_CERTS, `venv --clear`),
# and lives outside this checkout, where new_env would delete it (the test extra puts a uv in .venv-test).
usable_uv() {
  local version major minor
  [ -n "$1" ] && [[ "$1" != "$ROOT"/* ]] || return 1
  version=$("$1" --version 2>/dev/null) || return 1  # "uv 0.13.9 (...)"
  version=${version#uv }
  IFS=. read -r major minor _ <<<"${version%% *}"
  [ "$major" -gt 0 ] 2>/dev/null || [ "$minor" -ge 11 ] 2>/dev/null
}

# bootstrap_uv: set UV to a usable uv: the one on PATH (`type -P` looks only there, so nothing defined here
# can shadow it), else ours, installed once with pip into a virtual environment under the cache folder.
bootstrap_uv() {
  UV=$(type -P uv || true)
  if usable_uv "$UV"; then return; fi
  local tools=$HYBRID_CACHE/uv-bootstrap
  UV=$tools/bin/uv
  if usable_uv "$UV"; then return; fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  echo "installing uv into $tools (once)" >&2
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check 'uv>=0.11'
}
bootstrap_uv
UV_CACHE_DIR=$("$UV" cache dir)
export UV_CACHE_DIR  # children (the tests) find the same wheel cache

# new_env DIR EXTRAS [PYTHON]: a new virtual environment in DIR (anything there before is removed) on PYTHON
# (python3 by default) with hybrid installed in editable mode with EXTRAS, e.g. "all" or "test" ("" for none).
new_env() {
  "$UV" venv --quiet --clear --python "${3:-$(command -v python3)}" "$1"
  "$UV" pip install --quiet --python "$1/bin/python" -e "$ROOT${2:+[$2]}"
}
