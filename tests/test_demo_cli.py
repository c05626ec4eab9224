"""The headless demo: it says up front how long it will take, and Ctrl-C ends it cleanly."""

import os
import signal
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_headless_demo_gives_an_eta_and_ends_on_ctrl_c_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{env.get('PYTHONPATH', '')}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "napari_semietpicker.cli", "demo", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # a shell's background job ignores SIGINT; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert demo.stdout is not None
    lines = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("training on"):  # in the training loop from here on
                break
        demo.send_signal(signal.SIGINT)
        rest, stderr = demo.communicate(timeout=120)
    finally:
        demo.kill()
    eta_line = next(line for line in lines if line.startswith("this takes about"))
    seconds = float(eta_line.split()[3])
    assert seconds > 0 and "300 training and 100 co-training steps" in eta_line
    assert demo.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
