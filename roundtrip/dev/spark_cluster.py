"""A Spark standalone cluster on loopback, from the project's own pyspark: one master and one
worker started with ``spark-class`` (no download, no Hadoop), tied to this process
(``PR_SET_PDEATHSIG``) and stopped by their pids. The slow test runs the medallion on it and
compares with local mode; ``make bench`` times the main job on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from roundtrip.core.errors import ServiceError
from roundtrip.dev.services import free_port, spawn, stop_process, tail, wait_for_port


@dataclass(frozen=True)
class SparkCluster:
    master_url: str  # spark://127.0.0.1:PORT, for ROUNDTRIP_SPARK_MASTER
    ui_url: str  # the master's web UI (its /json/ lists the workers)
    cores: int
    memory: str
    pids: tuple[int, ...]  # the master and the worker (executors are the worker's children)

    def env(self) -> dict[str, str]:
        """What makes the project's Spark jobs run on this cluster, an executor using all of the
        worker's memory (Spark's own SPARK_EXECUTOR_MEMORY; its default is 1g)."""
        return {"ROUNDTRIP_SPARK_MASTER": self.master_url, "SPARK_EXECUTOR_MEMORY": self.memory}


def spark_class() -> Path:
    """pyspark's ``spark-class`` launcher, beside the Python running this."""
    import pyspark

    found = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not found.exists():
        raise ServiceError(f"pyspark has no bin/spark-class at {found}")
    return found


def _alive_workers(ui_url: str) -> int:
    """Workers registered with the master (0 while its web UI is not up yet)."""
    try:
        with urllib.request.urlopen(f"{ui_url}/json/", timeout=2) as answer:
            return int(json.load(answer).get("aliveworkers", 0))
    except OSError:
        return 0


@contextlib.contextmanager
def spark_cluster(cores: int = 1, memory: str = "1g", timeout: float = 90.0) -> Iterator[SparkCluster]:
    """A master and one worker (``cores``, ``memory`` for executors) on free loopback ports;
    yields once the worker has registered with the master."""
    launcher = str(spark_class())
    with tempfile.TemporaryDirectory(prefix="spark-cluster-") as folder:
        root = Path(folder)
        port, ui_port, worker_ui = free_port(), free_port(), free_port()
        # the daemons' own settings: quiet logs, their files under the temp folder, loopback only
        env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_DIRS": str(root / "local"),
            "SPARK_WORKER_DIR": str(root / "work"),
            "SPARK_LOG_DIR": str(root / "logs"),
            "SPARK_DAEMON_MEMORY": "512m",
        }
        master_log, worker_log = root / "master.log", root / "worker.log"
        master = spawn(
            [launcher, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui_port)],
            master_log,
            env=env,
        )  # fmt: skip
        worker = None
        try:
            wait_for_port(master, "spark master", port, master_log, timeout)
            master_url, ui_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
            worker = spawn(
                [launcher, "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
                 "--cores", str(cores), "--memory", memory, "--webui-port", str(worker_ui),
                 "--work-dir", str(root / "work")],
                worker_log,
                env=env,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while _alive_workers(ui_url) < 1:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise ServiceError(
                        f"the spark worker did not register with {master_url}; last lines of {worker_log}:\n"
                        f"{tail(worker_log)}"
                    )
                time.sleep(0.3)
            yield SparkCluster(master_url, ui_url, cores, memory, (master.pid, worker.pid))
        finally:
            for proc in (worker, master):
                if proc is not None:
                    stop_process(proc, signal.SIGTERM)
