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
    # Packages installed without their dependencies (pyproject's [tool.sfumato]): data-packages, used
    # for their data only (open-clip-torch would pull torchvision and timm); no-deps-packages, whose
    # dependencies are listed in the extras; cuda-packages, only next to a CUDA build of torch.
    "$VENV/bin/python" -c '
import sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    tool = tomllib.load(f)["tool"]["sfumato"]
import torch
cuda = ["cuda-packages"] if torch.version.cuda else []
print("\n".join(p for key in ["data-packages", "no-deps-packages", *cuda] for p in tool[key]))
' "$ROOT/pyproject.toml" | xargs -r "$VENV/bin/python" -m pip install -q --no-deps
    echo "$HASH" > "$STAMP"
fi
