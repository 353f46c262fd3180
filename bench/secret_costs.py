"""What secrets cost: cold start of a function with two secrets next to one without (the
server decrypts them for each container start), and the decryption itself.

    python bench/secret_costs.py [--cold-n 9]

Prints a Markdown table (the one in docs/benchmarks.md comes from here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ferry  # noqa: E402

app = ferry.App("bench-secrets")


@app.function()
def plain(x: int) -> int:
    return x + 1


@app.function(secrets=[ferry.Secret.from_name("bench-named"), ferry.Secret.from_dict({"BENCH_ANON": "v" * 64})])
def with_secrets(x: int) -> int:
    return x + len(os.environ["BENCH_NAMED"])


def decrypt_cost(n: int = 2000) -> dict[str, float]:
    """Microseconds per container start to decrypt 1 and 5 secrets of 10 keys each."""
    from ferry.server.secrets import SecretStore
    from ferry.server.store import Store

    home = Path(tempfile.mkdtemp(prefix="ferry-bench-secrets-"))
    store = SecretStore(Store(home / "state.db"), home / "secret.key")
    for i in range(5):
        store.create(f"s{i}", {f"K{k}": "x" * 40 for k in range(10)})
    result = {}
    for count in (1, 5):
        refs = [{"name": f"s{i}"} for i in range(count)]
        start = time.perf_counter()
        for _ in range(n):
            store.environment(refs, "bench")
        result[f"{count} secret(s)"] = (time.perf_counter() - start) / n * 1e6
    return result


def cold_starts(n: int) -> dict[str, float]:
    from server_process import start_server

    home = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    os.environ["FERRY_HOME"] = str(home)
    server = start_server(home)
    os.environ["FERRY_SERVER_URL"] = server["url"]
    try:
        ferry._client.Client.for_url(server["url"]).request_sync(
            "secret.create", name="bench-named", values={"BENCH_NAMED": "secret"}, force=True)
        samples: dict[str, list[float]] = {"no secrets": [], "2 secrets": []}
        for _ in range(n):  # interleaved, so drift affects both alike
            for label, function in (("no secrets", plain), ("2 secrets", with_secrets)):
                with app.run(show_logs=False):
                    start = time.perf_counter()
                    function.remote(1)
                    samples[label].append(time.perf_counter() - start)
        return {label: statistics.median(values) * 1000 for label, values in samples.items()}
    finally:
        server["stop"]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-n", type=int, default=9)
    args = parser.parse_args()
    cold = cold_starts(args.cold_n)
    decrypt = decrypt_cost()
    print("| measurement | value |\n| --- | --- |")
    for label, ms in cold.items():
        print(f"| cold start, {label} (median of {args.cold_n}) | {ms:.0f} ms |")
    for label, us in decrypt.items():
        print(f"| decrypting {label} of 10 keys for one container start | {us:.0f} µs |")


if __name__ == "__main__":
    main()
