"""Celery 5 + Redis on this machine, measured the way `celeritas bench` measures celeritas.

Run by scripts/bench-compare; standalone:

    .venv-bench/bin/python scripts/bench_celery.py --tasks 20000 --concurrency 2 --json

Configuration follows the seed's core/celery.py: the queues default, email, campaigns and import,
worker_prefetch_multiplier=1, acks_late, Redis as broker and result backend (results are kept,
as celeritas keeps them). The worker is started here as a child process (prefork pool, the
seed's default) on every queue, and stopped at the end; the Redis database used (15 by default)
is flushed before and after.

Clocks: submit rate and round trips on this client's clock; throughput from the first send
(client wall clock) to the last result's `date_done` (written by the worker, same machine).
Celery records no start moment unless task_track_started adds a write per task, so there is
no pickup latency.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

from celery import Celery
from kombu import Queue

QUEUES = ["default", "email", "campaigns", "import"]


def make_app(redis_url):
    app = Celery("bench_celery", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        task_routes={
            "apps.campaigns.tasks.send_campaign": {"queue": "campaigns"},
            "apps.campaigns.tasks.send_email_batch": {"queue": "email"},
            "apps.campaigns.tasks.send_single_email": {"queue": "email"},
            "apps.mailer.tasks.import_contacts_async": {"queue": "import"},
            "apps.mailer.tasks.validate_contact_batch": {"queue": "import"},
        },
        task_time_limit=30 * 60,
        task_soft_time_limit=25 * 60,
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="noop")
    def noop(**kwargs):
        return kwargs

    return app


REDIS_URL = os.environ.get("CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/15")
app = make_app(REDIS_URL)
noop = app.tasks["noop"]


def percentiles(values):
    if not values:
        return None
    ordered = sorted(values)

    def rank(percent):
        index = max(1, -(-len(ordered) * percent // 100)) - 1
        return ordered[min(index, len(ordered) - 1)]

    return {
        "samples": len(ordered),
        "p50_ms": round(rank(50) * 1000, 3),
        "p95_ms": round(rank(95) * 1000, 3),
        "p99_ms": round(rank(99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def peak_memory(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def start_worker(concurrency, log_path):
    log = open(log_path, "w")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench_celery",
            "worker",
            "-Q",
            ",".join(QUEUES),
            "-c",
            str(concurrency),
            "--prefetch-multiplier",
            "1",
            "-l",
            "warning",
            "-n",
            f"bench-{os.getpid()}@%h",
        ],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the Celery worker exited; see {log_path}")
        replies = app.control.ping(timeout=0.5)
        if any(f"bench-{os.getpid()}@" in name for reply in replies for name in reply):
            return worker
    worker.kill()
    raise SystemExit(f"the Celery worker did not answer within 60 s; see {log_path}")


def stop_worker(worker):
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def result_keys(ids):
    return [f"celery-task-meta-{task_id}" for task_id in ids]


def wait_for_results(client, ids):
    """Waits until every task has a result; answers their metadata."""
    last = result_keys(ids[-1:])[0]
    while client.get(last) is None:
        time.sleep(0.005)
    metas = [None] * len(ids)
    missing = list(range(len(ids)))
    while missing:
        still = []
        for start in range(0, len(missing), 1000):
            chunk = missing[start : start + 1000]
            values = client.mget(result_keys([ids[i] for i in chunk]))
            for index, value in zip(chunk, values):
                if value is None:
                    still.append(index)
                else:
                    metas[index] = json.loads(value)
        missing = still
        if missing:
            time.sleep(0.01)
    return metas


def submit(ids_out, count, batch_size, producer):
    left = count
    while left > 0:
        size = min(left, batch_size)
        sent = time.monotonic()
        for _ in range(size):
            ids_out.append((noop.apply_async(producer=producer).id, sent))
        left -= size


def run(tasks, batch_size, idle_samples, concurrency, log_path):
    client = app.backend.client
    client.flushdb()
    worker = start_worker(concurrency, log_path)
    try:
        # Warm-up: the pool's processes and the connections.
        warm = [noop.apply_async() for _ in range(200)]
        for result in warm:
            result.get(timeout=60)

        round_trips = []
        for _ in range(idle_samples):
            sent = time.monotonic()
            noop.apply_async().get(timeout=60)
            round_trips.append(time.monotonic() - sent)

        submitted = []
        first_send_wall = datetime.now(timezone.utc)
        began = time.monotonic()
        with app.producer_or_acquire() as producer:
            submit(submitted, tasks, batch_size, producer)
        submit_seconds = time.monotonic() - began
        ids = [task_id for task_id, _ in submitted]
        metas = wait_for_results(client, ids)
        seen = time.monotonic()
        done = [datetime.fromisoformat(meta["date_done"]) for meta in metas]
        done = [moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc) for moment in done]
        last_done = max(done)
        failed = sum(1 for meta in metas if meta.get("status") != "SUCCESS")
        # Round trip under load from the worker's date_done (same machine) back to this
        # client's send moment, for the tasks' batches.
        load_round_trips = []
        sample_every = max(1, tasks // 1000)
        for index in range(0, len(submitted), sample_every):
            _, sent = submitted[index]
            sent_wall = first_send_wall.timestamp() + (sent - began)
            load_round_trips.append(done[index].timestamp() - sent_wall)
        memory = [{"process": "worker (main)", "pid": worker.pid, "vm_hwm_bytes": peak_memory(worker.pid)}]
        for child in children_of(worker.pid):
            memory.append({"process": "worker (pool child)", "pid": child, "vm_hwm_bytes": peak_memory(child)})
        return {
            "system": "celery",
            "celery_version": __import__("celery").__version__,
            "tasks": tasks,
            "batch_size": batch_size,
            "concurrency": concurrency,
            "submit_rate_per_second": round(tasks / submit_seconds, 1),
            "throughput_per_second": round(
                tasks / (last_done - first_send_wall).total_seconds(), 1
            ),
            "drain_seen_after_seconds": round(seen - began, 3),
            "failed": failed,
            "idle_round_trip_latency": percentiles(round_trips),
            "load_round_trip_latency": percentiles(load_round_trips),
            "peak_memory": memory,
        }
    finally:
        stop_worker(worker)
        client.flushdb()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--idle-samples", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count())
    parser.add_argument("--log", default="celery-worker.log")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for flag in ("tasks", "batch_size", "concurrency"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}: must be at least 1")
    report = run(args.tasks, args.batch_size, args.idle_samples, args.concurrency, args.log)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
