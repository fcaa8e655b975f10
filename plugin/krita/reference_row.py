"""One reference of the docker's Reference section: a layer, its weight, what of it (style, composition, full)."""

from __future__ import annotations

from typing import Any

from sfumato.plugin.core.models import describe
from sfumato.plugin.core.references import DEFAULT_REFERENCE_WEIGHT, REFERENCE_WEIGHT_RANGE, ReferenceSpec
from sfumato.protocol import DEFAULT_REFERENCE_MODE, REFERENCE_MODES, ModelInfo

from .pickers import refill_layers
from .qt import QtWidgets


class ReferenceRow(QtWidgets.QWidget):
    """A reference layer (empty: the active layer), its weight and mode, and the IP-Adapter (auto: the backend's
    pick for the model)."""

    def __init__(self, on_remove: Any) -> None:
        super().__init__()
        lay = QtWidgets.QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.layer = QtWidgets.QComboBox()
        self.layer.setEditable(True)
        self.layer.setToolTip("Reference layer (empty: the active layer); it is sent scaled down")
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems(list(REFERENCE_MODES))
        self.mode.setCurrentText(DEFAULT_REFERENCE_MODE)
        self.mode.setToolTip("style: its look; composition: its layout; full: both")
        self.weight = QtWidgets.QDoubleSpinBox()
        self.weight.setRange(*REFERENCE_WEIGHT_RANGE)
        self.weight.setSingleStep(0.05)
        self.weight.setValue(DEFAULT_REFERENCE_WEIGHT)
        self.adapter = QtWidgets.QComboBox()
        self.adapter.setToolTip("IP-Adapter (auto: one that fits the model)")
        self.adapter.addItem("auto", None)
        self.remove = QtWidgets.QToolButton()
        self.remove.setText("✕")
        self.remove.clicked.connect(lambda: on_remove(self))
        lay.addWidget(self.layer, 0, 0, 1, 2)
        lay.addWidget(self.remove, 0, 2)
        lay.addWidget(self.mode, 1, 0)
        lay.addWidget(self.weight, 1, 1)
        lay.addWidget(self.adapter, 2, 0, 1, 3)
        self.refresh_layers()

    def refresh_layers(self) -> None:
        refill_layers(self.layer)

    def offer(self, adapters: list[ModelInfo]) -> None:
        current = self.adapter.currentData()
        while self.adapter.count() > 1:  # "auto" stays first
            self.adapter.removeItem(1)
        for m in adapters:
            self.adapter.addItem(describe(m), m.id)
        self.adapter.setCurrentIndex(max(0, self.adapter.findData(current)))

    def spec(self) -> ReferenceSpec:
        return ReferenceSpec(
            layer=self.layer.currentText() or None,
            weight=self.weight.value(),
            mode=self.mode.currentText(),
            adapter=self.adapter.currentData(),
        )
