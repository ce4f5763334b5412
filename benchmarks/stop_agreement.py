"""Cost of the per-iteration stop agreement (comm.max_over_ranks: one int all-reduce on the gloo group) that
lets every rank checkpoint after the same iteration when a signal reaches only some of them.

    python benchmarks/stop_agreement.py [--procs 2] [--calls 2000]

Prints the median and 90th percentile of one call, in microseconds, over `--calls` calls in each of
`--procs` processes on 127.0.0.1 (gloo), measured on rank 0.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _worker(rank, world, port, calls, out):
    import torch.distributed as dist

    from detgn.utils import comm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    for _ in range(50):  # warm-up
        comm.max_over_ranks(0)
    times = []
    for i in range(calls):
        t = time.perf_counter()
        comm.max_over_ranks(1 if (rank == 0 and i == calls - 1) else 0)
        times.append(time.perf_counter() - t)
    if rank == 0:
        times.sort()
        out.put((statistics.median(times) * 1e6, times[int(0.9 * len(times))] * 1e6))
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--calls", type=int, default=2000)
    a = p.parse_args()
    import torch.multiprocessing as mp

    from detgn.jobs.launch import find_free_port

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = find_free_port()
    procs = [ctx.Process(target=_worker, args=(r, a.procs, port, a.calls, out)) for r in range(a.procs)]
    for pr in procs:
        pr.start()
    median, p90 = out.get()
    for pr in procs:
        pr.join()
    print(
        f"comm.max_over_ranks, {a.procs} gloo processes on 127.0.0.1: median {median:.0f} us, p90 {p90:.0f} us per call"
    )


if __name__ == "__main__":
    main()
