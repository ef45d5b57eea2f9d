"""The model files the worker runs: :mod:`~workers.models.fetch` downloads and verifies the pinned files,
:mod:`~workers.models.prepare` prepares CenterFace and builds the derived variants (with
:mod:`~workers.models.quantize`), and ``python -m workers.models`` (:mod:`~workers.models.__main__`) does
it all ahead of time. Import from the submodules.
"""
