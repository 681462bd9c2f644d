"""Knowledge-store benchmark: build time, top-10 query latency, resident memory and
recall@10 against exact search, for every backend, at 100,000 chunks.

    python benchmarks/bench_stores.py                  # 100,000 x 384, every backend
    python benchmarks/bench_stores.py --n 20000 --backends faiss,qdrant

The vectors are synthetic (no model encodes 100,000 texts on 2 cores in a benchmark's
time): unit vectors scattered around ``--clusters`` random centres, which gives them
neighbourhoods like sentence embeddings have (uniform random vectors in 384 dimensions
are all nearly equidistant, the worst case for an approximate index). Queries are new
draws from the same distribution. Chunk texts are short placeholders ("chunk 123").

Each backend runs in its own process, so its resident memory is its own: ``RSS`` is the
whole process (Python, libraries, the 147 MB of embeddings, the index) after building
and querying; ``peak`` is the process's maximum. Latency is one query at a time (the way
``RAGSystem.query`` searches), ``--queries`` of them after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKENDS = ["faiss", "faiss-hnsw", "faiss-ivf", "qdrant"]


def clustered_unit_rows(
    n: int, dim: int, clusters: int, seed: int, spread: float = 1.0
) -> np.ndarray:
    """Unit vectors ``normalise(centre + noise)``, noise of norm about ``spread`` (1.0: a
    cosine of about 0.7 to the centre, as sentence embeddings have to their topic)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype("float32")
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype="float32")
    for start in range(0, n, 10_000):  # in blocks: the float64 draws stay small
        rows = centres[rng.integers(0, clusters, min(10_000, n - start))]
        rows = rows + rng.standard_normal(rows.shape).astype("float32") * (spread / np.sqrt(dim))
        out[start : start + len(rows)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(backend: str, args: argparse.Namespace) -> dict:
    """Build one backend's store and measure it (called in a child process)."""
    import faiss

    from fedrag_flower.rag.approximate_store import exact_top_k
    from fedrag_flower.rag.store_backends import store_class

    faiss.omp_set_num_threads(args.threads)
    # one draw, split: chunks and queries share their centres
    rows = clustered_unit_rows(
        args.n + args.queries, args.dim, args.clusters, args.seed, args.spread
    )
    chunks, queries = rows[: args.n], rows[args.n :]
    ids, texts = [str(i) for i in range(args.n)], [f"chunk {i}" for i in range(args.n)]
    rss_data = rss_mb()

    start = time.perf_counter()
    options = {"faiss-hnsw": {"ef_search": args.ef_search}, "faiss-ivf": {"nprobe": args.nprobe}}
    store = store_class(backend)(ids, texts, chunks, **options.get(backend, {}))
    build_s = time.perf_counter() - start

    store.search(queries[:1], args.k)  # warm-up
    latencies, found = [], []
    for q in queries:
        start = time.perf_counter()
        _, positions = store.search(q[None, :], args.k)
        latencies.append(time.perf_counter() - start)
        found.append(positions[0])
    exact = exact_top_k(chunks, queries, args.k)
    recall = np.mean([len(set(e) & set(f)) / len(e) for e, f in zip(exact.tolist(), found)])
    latencies_ms = np.array(latencies) * 1e3
    return {
        "backend": backend,
        "options": store.options(),
        "build_s": build_s,
        "query_ms_mean": float(latencies_ms.mean()),
        "query_ms_p95": float(np.percentile(latencies_ms, 95)),
        "recall@10": float(recall),
        "rss_mb": rss_mb(),
        "rss_data_mb": rss_data,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="chunks")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm around centres")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ef-search", type=int, default=64, help="faiss-hnsw candidates")
    parser.add_argument("--nprobe", type=int, default=16, help="faiss-ivf clusters scanned")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one backend
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return

    results = []
    for backend in args.backends.split(","):
        child = [sys.executable, __file__, "--one", backend] + [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k not in ("one", "backends")
        ]
        out = subprocess.run(child, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{backend}: done", file=sys.stderr, flush=True)

    print(
        f"\n{args.n:,} chunks x {args.dim} dims (synthetic, {args.clusters} clusters, "
        f"spread {args.spread}), "
        f"{args.queries} queries one at a time, top-{args.k}, {args.threads} FAISS threads\n"
    )
    print(
        "| backend | options | build (s) | query ms mean / p95 | recall@10 vs exact "
        "| RSS (MB) | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items() if k != "collection")
        print(
            f"| {r['backend']} | {options or '-'} | {r['build_s']:.1f} | "
            f"{r['query_ms_mean']:.2f} / {r['query_ms_p95']:.2f} | {r['recall@10']:.3f} | "
            f"{r['rss_mb']:.0f} | {r['peak_mb']:.0f} |"
        )
    print(
        f"\n(process RSS with the data generated, before any index: "
        f"{results[0]['rss_data_mb']:.0f} MB)"
    )


if __name__ == "__main__":
    main()
