"""The parts of ``bench/fuzz.py``, one job each.

``values``/``bodies``/``seeds``/``generator`` make the frames; ``ledger`` matches replies to them and
``stats`` tallies the outcomes; ``connection`` is one fuzz connection; ``probe`` the honest editor and
the pings it must not slow down; ``server`` the backend process and its RSS; ``bench`` one whole run;
``figures`` small helpers for the summary. ``bench/fuzz.py`` imports it as ``bench.fuzzing`` (with the
repository root on ``sys.path``), the name mypy checks it under.
"""
