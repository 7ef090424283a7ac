# Sourced by the other scripts. Python packages come through uv, whose wheel cache (~/.cache/uv, or
# $UV_CACHE_DIR) makes building an environment from scratch take seconds once the wheels are cached;
# environments themselves are never shared between runs of different scripts.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HF_HUB_OFFLINE=1  # every model we use is bundled or local: never reach for a hub

uv() {  # uv from PATH, else from the python3 it was pip-installed into (done here on first use)
  if command -v uv >/dev/null; then command uv "$@"; return; fi
  python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
  python3 -m uv "$@"
}

# new_env DIR EXTRAS: a new virtual environment in DIR (anything there before is removed) with
# hybrid installed in editable mode with EXTRAS, e.g. "all" or "test".
new_env() {
  uv venv --quiet --clear --python "$(command -v python3)" "$1"
  uv pip install --quiet --python "$1/bin/python" -e "$ROOT[$2]"
}
