"""Launch the real app (`python app.py`) in a subprocess on a free port, over random-weight
checkpoints, for the gradio_client and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Like the shipped set: a location net with a colour per object (object-empty) beside the older one.
SHIPPED_LIKE = ("empty", "location-empty", "object-empty", "clutter-location", "color")


def make_zoo(root: str, corrupt: str | None = "clevr-clutter-16", roles=None) -> str:
    """The four CLEVR roles at the `tiny` training preset's size (random weights), or the dataset
    presets `roles`; `corrupt` names a checkpoint whose weights file is overwritten with garbage
    (a truncated download)."""
    from projcomp.tabs.common import write_random_zoo

    write_random_zoo(root, preset="tiny", **({"roles": roles} if roles else {}))
    if corrupt:
        with open(os.path.join(root, corrupt, "model.safetensors"), "wb") as f:
            f.write(b"\x00\x01 not a safetensors file")
    return root


class AppServer:
    def __init__(self, zoo: str, env: dict | None = None, timeout: float = 180.0):
        self.tmp = tempfile.mkdtemp(prefix="projcomp-app-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        e = dict(os.environ)
        e.update({
            "PROJCOMP_CHECKPOINTS": zoo,
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_TEMP_DIR": os.path.join(self.tmp, "gradio"),
            "GRADIO_EXAMPLES_CACHE": os.path.join(self.tmp, "examples"),
            "TORCHINDUCTOR_CACHE_DIR": os.path.join(self.tmp, "inductor"),
            "PROJCOMP_CACHE": os.path.join(self.tmp, "cache"),
            "PROJCOMP_COLOR_SAMPLES": "2",
            "PROJCOMP_WARMUP": "0",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "MPLBACKEND": "Agg",
        })
        e.update(env or {})
        self.log_path = os.path.join(self.tmp, "app.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=e, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as r:
                    if r.status == 200:
                        self.start_log = self.read_log()  # what it logged until it served
                        return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError(f"app.py did not serve {self.url} within {timeout:.0f} s:\n{self.read_log()}")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(self.url + "config", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def read_log(self, start: int = -5000) -> str:
        """The server's output from character `start` (default: its last 5000 characters)."""
        self.log.flush()
        with open(self.log_path) as f:
            text = f.read()
        return text[start:]

    def log_size(self) -> int:
        self.log.flush()
        with open(self.log_path) as f:
            return len(f.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
