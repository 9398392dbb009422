"""Flower's side of `npm run bench -- --compare-flower` (issue 13): fedmark's churn demo run with Flower.

A Flower server (flwr.server.start_server, FedAvg, gRPC) and one Flower client process per node
(flwr.client.start_numpy_client), real processes on loopback, all through Flower's public API.
The federation is the one `fedmark demo` runs with its defaults, exported by
bench/export-demo-split.ts into SPLIT_DIR (meta.json): the same rows per node (10 regions by
state) and encoded features, the same held-out test rows, the same round-0 weights (fedmark's
seeded Glorot initialisation), MLP 32-16-1 (ReLU, sigmoid output, binary cross-entropy), Adam
(lr 0.01, betas 0.9/0.999, eps 1e-7 as TensorFlow.js) with a fresh optimizer every round as
fedmark's nodes, batch 32, 1 local epoch, a seeded shuffle every epoch (seed + round), 20
rounds, FedAvg weighted by examples. No federated evaluation (fraction_evaluate 0), as in the
issue's table; the global model is tested on the held-out rows once, after the last round.

    python3 bench/flower/flower_federation.py --split SPLIT_DIR [--flower-src DIR] [--threads 1]

Needs Python 3 with PyTorch, NumPy, grpcio and protobuf, and Flower's source tree (v1.4.0:
src/py on PYTHONPATH; the launcher bench/compare-flower.ts sets it). Prints one JSON line:
testAuc, medianRoundSeconds (rounds 2-20), roundSeconds, wallSeconds, serverPeakRssMb,
clientPeakRssMbMax, CPU seconds of all processes, Flower's version.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def peak_rss_mb() -> float:
    """VmHWM of this process (its peak resident set), in MB (10^6 bytes)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def load_split(split_dir: str):
    import numpy as np

    with open(os.path.join(split_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)

    def matrix(name: str, rows: int, width: int):
        return np.fromfile(os.path.join(split_dir, name), dtype=np.float32).reshape(rows, width)

    return meta, matrix


def initial_ndarrays(meta, split_dir: str):
    """fedmark's round-0 weights, in its tensor order (dense_k/kernel [in, out], dense_k/bias)."""
    import numpy as np

    flat = np.fromfile(os.path.join(split_dir, meta["initial"]["file"]), dtype=np.float32)
    arrays, offset = [], 0
    for tensor in meta["initial"]["tensors"]:
        size = int(np.prod(tensor["shape"]))
        arrays.append(flat[offset : offset + size].reshape(tensor["shape"]).copy())
        offset += size
    return arrays


def build_model(layers):
    """The MLP with Keras-layout parameters (kernel [in, out]), so weights map 1:1 to fedmark's."""
    import torch
    from torch import nn

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.params = nn.ParameterList()
            for i in range(len(layers) - 1):
                self.params.append(nn.Parameter(torch.zeros(layers[i], layers[i + 1])))
                self.params.append(nn.Parameter(torch.zeros(layers[i + 1])))

        def forward(self, x):
            for k in range(0, len(self.params), 2):
                x = x @ self.params[k] + self.params[k + 1]
                if k + 2 < len(self.params):
                    x = torch.relu(x)
            return x  # logits; sigmoid in the loss and the scores

    return Mlp()


def run_client(args) -> None:
    import numpy as np
    import torch
    import flwr as fl

    torch.set_num_threads(args.threads)
    meta, matrix = load_split(args.split)
    node = next(n for n in meta["nodes"] if n["name"] == args.node)
    x = torch.from_numpy(matrix(node["x"], node["trainRows"], meta["width"]))
    y = torch.from_numpy(matrix(node["y"], node["trainRows"], 1))
    training = meta["training"]
    model = build_model(meta["layers"])
    loss_fn = torch.nn.BCEWithLogitsLoss()

    class ChurnClient(fl.client.NumPyClient):
        def get_parameters(self, config):
            return [p.detach().numpy().copy() for p in model.params]

        def fit(self, parameters, config):
            with torch.no_grad():
                for p, value in zip(model.params, parameters):
                    p.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
            optimizer = torch.optim.Adam(model.parameters(), lr=float(config["lr"]), betas=(0.9, 0.999), eps=1e-7)
            generator = torch.Generator().manual_seed(int(config["seed"]) + int(config["round"]))
            batch = int(config["batch"])
            total, n = 0.0, x.shape[0]
            for _ in range(int(config["epochs"])):
                order = torch.randperm(n, generator=generator)
                total = 0.0
                for start in range(0, n, batch):
                    idx = order[start : start + batch]
                    optimizer.zero_grad()
                    loss = loss_fn(model(x[idx]), y[idx])
                    loss.backward()
                    optimizer.step()
                    total += float(loss) * len(idx)
            return self.get_parameters({}), n, {"loss": total / n}

        def evaluate(self, parameters, config):
            raise RuntimeError("no federated evaluation in this benchmark (fraction_evaluate is 0)")

    fl.client.start_numpy_client(server_address=args.address, client=ChurnClient())
    print(json.dumps({"node": args.node, "peakRssMb": peak_rss_mb(), "cpuSeconds": cpu_seconds()}), flush=True)


def auc(scores, labels) -> float:
    """ROC AUC as the Mann-Whitney statistic with mid-ranks for ties (exact, no binning)."""
    import numpy as np

    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_binned(scores, labels, bins: int = 1000) -> float:
    """fedmark's AUC (protocols/metrics.ts aucFromHistogram): 1000 score bins, ties within a bin count half."""
    import numpy as np

    index = np.clip(np.floor(scores * bins).astype(np.int64), 0, bins - 1)
    positives = np.bincount(index[labels > 0.5], minlength=bins).astype(np.float64)
    negatives = np.bincount(index[labels <= 0.5], minlength=bins).astype(np.float64)
    below = np.concatenate([[0.0], np.cumsum(negatives)[:-1]])
    return float((positives * (below + negatives / 2)).sum() / (positives.sum() * negatives.sum()))


def run_server(args) -> None:
    import numpy as np
    import torch
    import flwr as fl
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

    meta, matrix = load_split(args.split)
    training = meta["training"]
    times = {}

    class TimedFedAvg(fl.server.strategy.FedAvg):
        """Flower's FedAvg, with the start and end of each round noted (nothing else changed)."""

        final = None

        def configure_fit(self, server_round, parameters, client_manager):
            times.setdefault(server_round, [time.perf_counter(), None])
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            aggregated = super().aggregate_fit(server_round, results, failures)
            times[server_round][1] = time.perf_counter()
            if failures:
                print(f"round {server_round}: {len(failures)} failures", file=sys.stderr, flush=True)
            self.final = aggregated[0]
            return aggregated

    count = len(meta["nodes"])
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=count,
        min_available_clients=count,
        initial_parameters=ndarrays_to_parameters(initial_ndarrays(meta, args.split)),
        on_fit_config_fn=lambda r: {"round": r, "seed": meta["seed"], "lr": training["learningRate"], "batch": training["batchSize"], "epochs": training["localEpochs"]},
    )
    fl.server.start_server(server_address=args.address, config=fl.server.ServerConfig(num_rounds=meta["rounds"]), strategy=strategy)
    weights = parameters_to_ndarrays(strategy.final)
    model = build_model(meta["layers"])
    with torch.no_grad():
        for p, value in zip(model.params, weights):
            p.copy_(torch.from_numpy(value))
        scores = torch.sigmoid(model(torch.from_numpy(matrix(meta["test"]["x"], meta["test"]["rows"], meta["width"])))).numpy().ravel()
    labels = matrix(meta["test"]["y"], meta["test"]["rows"], 1).ravel()
    rounds = [times[r][1] - times[r][0] for r in sorted(times) if times[r][1] is not None]
    print(json.dumps({"testAuc": auc(scores.astype(np.float64), labels), "testAucBinned": auc_binned(scores.astype(np.float64), labels), "testRows": int(len(labels)), "roundSeconds": rounds, "peakRssMb": peak_rss_mb(), "cpuSeconds": cpu_seconds()}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(address: str, server, timeout: float) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Flower server exited ({server.returncode}) before listening on {address}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"the Flower server did not listen on {address} within {timeout} s")


def last_json(text: str, who: str):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{who} printed no result; its output ended with:\n{text[-2000:]}")


def run_federation(args) -> None:
    """The launcher: a server process and one client process per node; waits for all; one JSON line."""
    started = time.perf_counter()
    with open(os.path.join(args.split, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    address = f"127.0.0.1:{free_port()}"
    me = [sys.executable, os.path.abspath(__file__), "--split", args.split, "--address", address, "--threads", str(args.threads)]
    logs = open(os.path.join(args.split, "flower.log"), "w", encoding="utf-8")
    server = subprocess.Popen(me + ["--role", "server"], stdout=subprocess.PIPE, stderr=logs, text=True)
    # Flower 1.4's client does not retry a refused connection: start the clients once the server listens.
    wait_for_port(address, server, args.start_timeout)
    clients = [subprocess.Popen(me + ["--role", "client", "--node", n["name"]], stdout=subprocess.PIPE, stderr=logs, text=True) for n in meta["nodes"]]
    server_out, _ = server.communicate()
    client_outs = [c.communicate()[0] for c in clients]
    wall = time.perf_counter() - started
    if server.returncode != 0 or any(c.returncode != 0 for c in clients):
        raise RuntimeError(f"a Flower process failed (server exit {server.returncode}, clients {[c.returncode for c in clients]}); see {logs.name}")
    s = last_json(server_out, "the server")
    cs = [last_json(out, f"client {n['name']}") for out, n in zip(client_outs, meta["nodes"])]
    later = s["roundSeconds"][1:]
    import flwr

    print(json.dumps({
        "framework": "flower",
        # A source tree has no package metadata (flwr.__version__ is "unknown"): the launcher passes its pyproject's version.
        "flowerVersion": flwr.__version__ if getattr(flwr, "__version__", "unknown") != "unknown" else args.flower_version,
        "testAuc": s["testAuc"],
        # The same figure as fedmark reports it (a 1000-bin score histogram), for a like-for-like ratio.
        "testAucBinned": s["testAucBinned"],
        "testRows": s["testRows"],
        "rounds": len(s["roundSeconds"]),
        "nodes": len(cs),
        "medianRoundSeconds": statistics.median(later) if later else None,
        "roundOneSeconds": s["roundSeconds"][0] if s["roundSeconds"] else None,
        "roundSeconds": s["roundSeconds"],
        "wallSeconds": wall,
        "serverPeakRssMb": s["peakRssMb"],
        "clientPeakRssMbMax": max(c["peakRssMb"] for c in cs),
        "cpuSeconds": {"server": s["cpuSeconds"], "clients": sum(c["cpuSeconds"] for c in cs)},
        "threadsPerProcess": args.threads,
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", required=True, help="the directory bench/export-demo-split.ts wrote")
    parser.add_argument("--role", choices=["federation", "server", "client"], default="federation")
    parser.add_argument("--address", default="127.0.0.1:8080")
    parser.add_argument("--node")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads per process (10 clients share the cores)")
    parser.add_argument("--start-timeout", type=float, default=120, help="seconds the server has to start listening")
    parser.add_argument("--flower-version", default="1.4.0", help="reported when the source tree has no package metadata")
    args = parser.parse_args()
    # Flower 1.4 posts usage events to its telemetry server unless told not to (no network here).
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    {"federation": run_federation, "server": run_server, "client": run_client}[args.role](args)


if __name__ == "__main__":
    main()
