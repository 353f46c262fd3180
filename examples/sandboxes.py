"""Run code in a sandbox and read its output as it is written.

    ferry run examples/sandboxes.py
"""

import modal

app = modal.App("example-sandboxes")


@app.local_entrypoint()
def main() -> None:
    sb = modal.Sandbox.create(app=app, timeout=120)
    program = "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.2)"
    p = sb.exec("python3", "-c", program)
    for line in p.stdout:  # each line arrives while the program runs
        print("sandbox says:", line, end="")
    print("exit code:", p.wait())
    sb.terminate()
