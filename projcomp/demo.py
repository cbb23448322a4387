"""Old home of the app's logic, kept only for old imports (benchmarks/bench_compose.py uses
`random_net`). The app's per-tab logic now lives in `projcomp.tabs` (clevr, colours, sdxl, theory,
common); import from there."""

from .tabs.common import random_net, write_random_zoo  # noqa: F401

__all__ = ["random_net", "write_random_zoo"]
