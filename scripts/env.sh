# Sourced by the other scripts: one virtual environment, kept outside the clone so that fresh clones
# (and CI) reuse the installed torch and friends; `pip install` then only checks what is there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HYBRID_VENV:-$HOME/.cache/hybrid/venv}
export HF_HUB_OFFLINE=1  # every model we use is bundled or local: never reach for a hub

install_python() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
}
