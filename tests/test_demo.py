"""The README's first command: `vms serve --demo` records its demo cameras, `vms status` shows them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.polling import free_port, wait_for


def test_demo_records_and_status_shows_it(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vms", "serve", "--demo", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    status = [sys.executable, "-m", "vms", "status", "--url", f"http://127.0.0.1:{port}",
              "--data-dir", str(data)]  # fmt: skip

    def recording() -> dict[str, object] | None:
        r = subprocess.run([*status, "--json"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return None
        body = json.loads(r.stdout)
        cams = body["cameras"]
        ok = all(
            c["health"]["state"] == "online" and c["recording"]["bytes_written"] > 0 for c in cams
        )
        return body if ok and len(cams) >= 2 else None

    try:
        body = wait_for(recording, 120, "demo cameras online and recording")
        ids = {c["id"] for c in body["cameras"]}
        assert {"demo-pattern", "demo-hevc"} <= ids
        table = subprocess.run(status, capture_output=True, text=True, timeout=30)
        assert table.returncode == 0
        lines = table.stdout.splitlines()
        assert lines[0].split()[:3] == ["CAMERA", "STATE", "VIDEO"]
        assert any(line.startswith("demo-pattern") and "ONLINE" in line for line in lines)
        assert any(line.startswith("local") and "OK" in line for line in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped cleanly" in err
    assert (data / "recordings" / ".vms-root.json").exists()
