"""Time to the first CLEVR composition in the real app (issue 7 target: within 10 s on 2 cores).

    python benchmarks/bench_app.py [--checkpoints checkpoints] [--calls 3]

Starts `python app.py` as a user would (the shipped checkpoints, its default background warm-up
on), then drives the "Compose" button's endpoint with gradio_client using the app's defaults:
the three default objects, empty background (A) beside Bayes (B), 16 Heun steps, 2 samples per
side, seed 0, the dtype the app picks for this CPU. Prints the seconds to serve, the first
composition (what a visitor waits for after the page loads) and the following ones.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from app_server import AppServer  # noqa: E402  (launches app.py in a subprocess on a free port)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", default=os.path.join(HERE, "..", "checkpoints"))
    ap.add_argument("--calls", type=int, default=3, help="compositions to time after the app serves")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds to wait after the app serves (0 = a visitor who clicks at once)")
    ap.add_argument("--warmup", type=int, default=1, choices=[0, 1], help="the app's background warm-up (PROJCOMP_WARMUP)")
    args = ap.parse_args()
    from gradio_client import Client

    sys.path.insert(0, os.path.join(HERE, ".."))
    from projcomp.sampling import bf16_is_fast

    t0 = time.perf_counter()
    server = AppServer(os.path.abspath(args.checkpoints), env={"PROJCOMP_WARMUP": str(args.warmup)})
    t_serve = time.perf_counter() - t0
    try:
        client = Client(server.url, verbose=False)
        table = {"headers": ["x", "y", "weight"], "data": [[0.3, 0.55, 1.0], [0.7, 0.55, 1.0], [0.5, 0.75, 1.0]]}
        print(f"# python app.py over {args.checkpoints}; torch threads from the app; bf16 = {bf16_is_fast('cpu')}")
        print(f"serving after {t_serve:.1f} s")
        time.sleep(args.wait)
        for i in range(args.calls):
            t = time.perf_counter()
            _, _, md = client.predict(table, "empty", 16, 0, 2, bf16_is_fast("cpu"), api_name="/compose_clevr")
            dt = time.perf_counter() - t
            first = md.splitlines()[0] if md else ""
            print(f"composition {i + 1}: {dt:.2f} s  ({first[:90]})")
    finally:
        server.close()


if __name__ == "__main__":
    main()
