"""A stand-in for Krita's ``krita`` module, so the Krita adapter's logic runs in plain pytest.

Only what ``plugin/krita/document.py`` calls, with Krita's conventions: ``pixelData`` and
``setPixelData`` take image coordinates; integer layers hold BGRA, float layers RGBA; pixels outside
what was painted read as transparent. The real Krita runs the same adapter in tests/krita.
"""

from __future__ import annotations

from typing import Any

BYTES_PER_PIXEL = {"U8": 4, "U16": 8, "F16": 8, "F32": 16}


class Canvas:
    """Pixels of one layer or selection over the whole document, row-major."""

    def __init__(self, width: int, height: int, bpp: int) -> None:
        self.cols, self.rows, self.bpp = width, height, bpp
        self.data = bytearray(width * height * bpp)

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:
        out = bytearray(w * h * self.bpp)
        for row in range(max(y, 0), min(y + h, self.rows)):
            lo, hi = max(x, 0), min(x + w, self.cols)
            if lo < hi:
                src = (row * self.cols + lo) * self.bpp
                dst = ((row - y) * w + lo - x) * self.bpp
                out[dst : dst + (hi - lo) * self.bpp] = self.data[src : src + (hi - lo) * self.bpp]
        return bytes(out)

    def setPixelData(self, data: bytes, x: int, y: int, w: int, h: int) -> None:
        assert len(data) == w * h * self.bpp, "Krita would write garbage"
        for row in range(max(y, 0), min(y + h, self.rows)):
            lo, hi = max(x, 0), min(x + w, self.cols)
            if lo < hi:
                src = ((row - y) * w + lo - x) * self.bpp
                dst = (row * self.cols + lo) * self.bpp
                self.data[dst : dst + (hi - lo) * self.bpp] = data[src : src + (hi - lo) * self.bpp]

    def regrow(self, x: int, y: int, w: int, h: int) -> None:
        """Krita's canvas resize for this layer: the old (x, y) becomes (0, 0); new pixels are transparent."""
        old = self.pixelData(x, y, w, h)  # outside the old canvas reads as transparent
        self.cols, self.rows, self.data = w, h, bytearray(old)


class Selection(Canvas):
    def __init__(self, width: int, height: int) -> None:
        super().__init__(width, height, 1)

    def _bounds(self) -> tuple[int, int, int, int]:
        rows = [r for r in range(self.rows) if any(self.data[r * self.cols : (r + 1) * self.cols])]
        cols = [c for c in range(self.cols) if any(self.data[c :: self.cols])]
        return (cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]) if rows else (0, 0, 0, 0)

    def x(self) -> int:
        return self._bounds()[0]

    def y(self) -> int:
        return self._bounds()[1]

    def width(self) -> int:
        return self._bounds()[2]

    def height(self) -> int:
        return self._bounds()[3]


class Node(Canvas):
    def __init__(self, doc: Document, name: str, kind: str = "paintlayer") -> None:
        super().__init__(doc.width(), doc.height(), BYTES_PER_PIXEL[doc.depth])
        self.doc, self._name, self.kind, self.is_locked = doc, name, kind, False
        self.parent: Node | None = None
        self.children: list[Node] = []  # bottom to top, as Krita lists them

    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return self.kind

    def colorModel(self) -> str:
        return self.doc.model

    def colorDepth(self) -> str:
        return self.doc.depth

    def colorProfile(self) -> str:
        return self.doc.profile

    def parentNode(self) -> Node | None:
        return self.parent

    def addChildNode(self, child: Node, above: Node | None) -> bool:
        child.parent = self
        self.children.insert(self.children.index(above) + 1 if above is not None else len(self.children), child)
        return True

    def remove(self) -> bool:
        assert self.parent is not None
        self.parent.children.remove(self)
        self.parent = None
        return True

    def setLocked(self, locked: bool) -> None:
        self.is_locked = locked

    def uniqueId(self) -> Any:
        from PyQt6.QtCore import QUuid

        if not hasattr(self, "_uuid"):
            self._uuid = QUuid.createUuid()
        return self._uuid

    def bounds(self) -> Any:
        """The extent of what was painted (alpha > 0), as Krita reports it; 8-bit layers only here."""
        from PyQt6.QtCore import QRect

        assert self.bpp == 4, "the fake knows the extent of 8-bit layers only"
        painted = [i // 4 for i in range(3, len(self.data), 4) if self.data[i]]
        if not painted:
            return QRect()
        xs, ys = [i % self.cols for i in painted], [i // self.cols for i in painted]
        return QRect(min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)

    def thumbnail(self, w: int, h: int) -> Any:
        """The layer scaled to fit w×h, as Krita makes it (smooth scaling of the BGRA pixels)."""
        from PyQt6.QtCore import Qt
        from PyQt6.QtGui import QImage

        assert self.bpp == 4, "the fake makes thumbnails of 8-bit layers only"
        image = QImage(bytes(self.data), self.cols, self.rows, self.cols * 4, QImage.Format.Format_ARGB32)
        return image.scaled(w, h, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


class Document:
    def __init__(self, width: int, height: int, depth: str = "U8", model: str = "RGBA", profile: str = "") -> None:
        self.size, self.depth, self.model = (width, height), depth, model
        self.profile = profile or ("sRGB-elle-V2-g10.icc" if depth.startswith("F") else "sRGB-elle-V2-srgbtrc.icc")
        self.root = Node(self, "root", "grouplayer")
        self.active: Node | None = None
        self.sel: Selection | None = None
        self.refreshes = 0
        self.title, self.dpi = "fake.kra", 72.0

    def resolution(self) -> float:
        return self.dpi

    def name(self) -> str:
        return self.title

    def fileName(self) -> str:
        return ""

    def width(self) -> int:
        return self.size[0]

    def height(self) -> int:
        return self.size[1]

    def colorModel(self) -> str:
        return self.model

    def colorDepth(self) -> str:
        return self.depth

    def colorProfile(self) -> str:
        return self.profile

    def selection(self) -> Selection | None:
        return self.sel

    def rootNode(self) -> Node:
        return self.root

    def topLevelNodes(self) -> list[Node]:
        return list(self.root.children)

    def nodeByName(self, name: str) -> Node | None:
        return next((n for n in self.root.children if n.name() == name), None)

    def activeNode(self) -> Node | None:
        return self.active

    def setActiveNode(self, node: Node) -> None:
        self.active = node

    def createNode(self, name: str, kind: str) -> Node:
        return Node(self, name, kind)

    def refreshProjection(self) -> None:
        self.refreshes += 1

    def resizeImage(self, x: int, y: int, w: int, h: int) -> None:
        """Image ▸ Canvas Size: every layer (and the selection) moves so that the old (x, y) is the new origin."""
        for node in self.root.children:
            node.regrow(x, y, w, h)
        if self.sel is not None:
            self.sel.regrow(x, y, w, h)
        self.size = (w, h)

    def waitForDone(self) -> None:
        pass

    def add_layer(self, name: str) -> Node:
        """Test setup: a paint layer on top, made active, as a painter would."""
        node = self.createNode(name, "paintlayer")
        self.root.addChildNode(node, self.root.children[-1] if self.root.children else None)
        self.active = node
        return node


class Krita:
    _instance: Krita | None = None

    def __init__(self) -> None:
        self.docs: list[Document] = []

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def documents(self) -> list[Document]:
        return list(self.docs)

    def activeDocument(self) -> Document | None:
        return self.docs[-1] if self.docs else None

    def createDocument(
        self, w: int, h: int, name: str, model: str, depth: str, profile: str, resolution: float
    ) -> Document:
        doc = Document(w, h, depth=depth, model=model, profile=profile)
        doc.title, doc.dpi = name, resolution
        return doc

    def activeWindow(self) -> Window:
        return Window(self)


class Window:
    def __init__(self, app: Krita) -> None:
        self.app = app

    def addView(self, doc: Document) -> None:
        self.app.docs.append(doc)  # shown: it becomes the active document


def __getattr__(name: str) -> Any:
    """Whatever else the plugin imports from ``krita`` (docker and extension classes) is not faked."""
    raise AttributeError(f"fake krita has no {name}; tests/plugin/fake_krita.py fakes only the document API")
