"""Rewrite the golden wire fixtures. Run only for an intended wire change, and bump the minor/major version."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "portable"))
from sfumato.protocol import encode
from sfumato.protocol.examples import examples

out = Path(__file__).resolve().parent / "golden"
out.mkdir(exist_ok=True)
for name, msg in examples().items():
    (out / f"{name}.hex").write_text(encode(msg).hex() + "\n")
    print("wrote", name)
