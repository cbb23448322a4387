"""Old name of `python -m projcomp.generate` (and of its functions), kept so that old commands and
imports still work. The samplers are `projcomp.sampling`."""

from __future__ import annotations

import sys

from .generate import build_spec, main, parse_seeds, prepare, run_spec, save_images  # noqa: F401
from .imageio import to_uint8  # noqa: F401

if __name__ == "__main__":
    print("note: `python -m projcomp.sample` is now `python -m projcomp.generate`; running that", file=sys.stderr)
    sys.exit(main())
