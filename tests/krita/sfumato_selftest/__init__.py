"""A test-only Krita plugin that runs the end-to-end scenario; installed by tests/krita, never shipped.

It arms itself only when SFUMATO_KRITA_TEST_OUT is set. If the Sfumato plugin itself failed to
import, it reports Krita's error text at once instead of letting the test wait for its timeout.
"""

import os
import traceback

if os.environ.get("SFUMATO_KRITA_TEST_OUT"):
    try:
        import sfumato.plugin.krita.extension  # noqa: F401  (already loaded by Krita when it works)
    except Exception:
        from .result import report_broken_plugin

        report_broken_plugin(traceback.format_exc())
    else:
        from .scenario import arm

        arm()
