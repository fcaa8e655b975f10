# Shared by install/start and install/test: create .venv/ (idempotent) and install the project into it.
# Usage: . install/_env.sh EXTRAS   (e.g. "backend" or "dev")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SFUMATO_PYTHON:-python3}"
VENV="$ROOT/.venv"
EXTRAS="$1"
if [ ! -x "$VENV/bin/python" ]; then
    echo "sfumato: creating $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
fi
# Reinstall only when the project's requirements changed (pyproject.toml) or another extra is asked for.
STAMP="$VENV/.sfumato-installed-$EXTRAS"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
    echo "sfumato: installing sfumato[$EXTRAS] into .venv (torch is pinned to the 2.13.0 CPU/CUDA wheel)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
    # Packages used for their data only (pyproject's [tool.sfumato] data-packages): without their
    # dependencies, which the project never imports (open-clip-torch would pull torchvision and timm).
    "$VENV/bin/python" -c '
import sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["tool"]["sfumato"]["data-packages"]))
' "$ROOT/pyproject.toml" | xargs -r "$VENV/bin/python" -m pip install -q --no-deps
    echo "$HASH" > "$STAMP"
fi
