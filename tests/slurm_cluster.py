"""A real single-node SLURM cluster for the tests, started under a temporary folder.

Five daemons, each in the foreground as a child of the test process, so that each is stopped by its
own pid at the end (nothing is looked up or killed by name):

- ``munged`` with its own key and socket (``AuthInfo=socket=...`` points SLURM at it);
- ``mariadbd`` on a private socket and a free TCP port on 127.0.0.1, with a data folder made by
  ``mariadb-install-db``, and a database user for the accounting database;
- ``slurmdbd`` (accounting, so that ``sacct`` answers as on a site cluster: the Snakemake SLURM
  executor polls it), started before ``slurmctld``;
- ``slurmctld`` and ``slurmd``: one node ``localhost`` with this machine's CPUs and part of its
  memory, ``proctrack/linuxproc`` and ``task/none`` (no cgroups in a container), one partition.

Clients find the cluster through ``SLURM_CONF`` (see :meth:`SlurmCluster.env`). All state, spool,
pid and log files live under the folder given to :func:`start_cluster`. Running it needs root (the
daemons run as root, and so do the jobs) and the Debian packages ``slurm-wlm``, ``munge``,
``slurmdbd`` and ``mariadb-server``; :func:`missing` says what is absent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER = "mrisrtest"
PARTITION = "mrisr-test"
ACCOUNT = "mrisr-acct"
BINARIES = (
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sacctmgr",
    "sbatch",
    "srun",
    "sacct",
    "scontrol",
)
#: Terminal job states (sacct's State column, first word).
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


class ClusterError(RuntimeError):
    """A daemon did not start; the message holds the tail of its log."""


def missing() -> str | None:
    """Why this machine cannot run the cluster (``None`` when it can)."""
    if os.geteuid() != 0:
        return "the SLURM test cluster runs its daemons as root"
    absent = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if absent:
        return f"not installed: {', '.join(absent)} (Debian: apt-get install slurm-wlm munge slurmdbd mariadb-server)"
    return None


def _which(name: str) -> str:
    found = shutil.which(name) or str(Path("/usr/sbin", name))
    return found


MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def _munge_answers() -> bool:
    """Whether a munged answers on the default socket (a credential made and decoded)."""
    if not MUNGE_SOCKET.exists() or shutil.which("munge") is None:
        return False
    made = subprocess.run(["munge", "-n", "-S", str(MUNGE_SOCKET)], capture_output=True, timeout=10)
    if made.returncode != 0:
        return False
    back = subprocess.run(["unmunge", "-S", str(MUNGE_SOCKET)], input=made.stdout, capture_output=True, timeout=10)
    return back.returncode == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no log at {path})"


def _memory_mb() -> int:
    """Memory the node offers to jobs: half of what the machine has, in MB."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024 // 2
    return 2048


@dataclass
class SlurmCluster:
    """A running single-node cluster; :meth:`stop` ends it.

    Attributes:
        root: The folder holding its configuration, state and logs.
        cpus: CPUs of the one node.
        memory_mb: ``RealMemory`` of the node (jobs asking for more pend for ever).
    """

    root: Path
    cpus: int
    memory_mb: int
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        """The cluster's slurm.conf."""
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a client of this cluster (``SLURM_CONF`` set, inherited SLURM_* dropped)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    @property
    def log_dir(self) -> Path:
        """Where the daemons' logs are."""
        return self.root / "log"

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            why = done.stderr.strip() or done.stdout.strip()
            raise ClusterError(f"{' '.join(args)}: exit {done.returncode}: {why}")
        return done

    def sbatch(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Submit with ``sbatch --parsable`` and return the job id."""
        done = subprocess.run(
            [_which("sbatch"), "--parsable", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise ClusterError(f"sbatch {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> dict[str, dict[str, str]]:
        """sacct's record of each job of ``job_id`` (array tasks as ``<id>_<task>``), steps left out."""
        done = self.run(
            [
                "sacct",
                "-j",
                job_id,
                "-X",
                "-n",
                "-P",
                "--format=JobID,State,ExitCode,Partition,Account,AllocCPUS,ReqMem,NodeList",
            ],
            check=False,
        )
        rows: dict[str, dict[str, str]] = {}
        for line in done.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 8:
                continue
            keys = ("state", "exit_code", "partition", "account", "cpus", "mem", "nodes")
            rows[parts[0]] = dict(zip(keys, parts[1:], strict=True))
            rows[parts[0]]["state"] = parts[1].split()[0]
        return rows

    def wait(self, job_id: str, *, timeout: float = 300, count: int = 1) -> dict[str, dict[str, str]]:
        """Wait until ``job_id`` (and at least ``count`` of its array tasks) ended; returns :meth:`jobs`.

        Raises:
            TimeoutError: With the queue and the last record, when the job did not end in time.
        """
        end = time.monotonic() + timeout
        rows: dict[str, dict[str, str]] = {}
        while time.monotonic() < end:
            rows = self.jobs(job_id)
            pending = self.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], check=False).stdout.strip()
            if len(rows) >= count and not pending and all(r["state"] in FINAL_STATES for r in rows.values()):
                return rows
            time.sleep(1)
        queue = self.run(["squeue", "-o", "%i %T %R"], check=False).stdout
        raise TimeoutError(f"job {job_id} did not end in {timeout} s; sacct {rows}; squeue:\n{queue}")

    def last_job_id(self) -> int:
        """The highest job id sacct knows (0 before the first job)."""
        ids = self.run(["sacct", "-X", "-n", "-P", "-a", "-S", "2020-01-01", "--format=JobIDRaw"]).stdout.split()
        return max((int(i) for i in ids if i.isdigit()), default=0)

    def state(self, job_id: str) -> str:
        """The job's current state from squeue (``""`` when no longer queued)."""
        return self.run(["squeue", "-h", "-j", job_id, "-o", "%T"], check=False).stdout.strip()

    def _start(self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.out", "wb")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            list(args), stdout=log, stderr=subprocess.STDOUT, env=env or self.env, start_new_session=True
        )
        log.close()
        self._procs.append((name, proc))
        return proc

    def _await(self, what: str, probe: object, log: Path, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited ({proc.returncode}):\n{_tail(self.log_dir / f'{name}.out')}")
            if callable(probe) and probe():
                return
            time.sleep(0.5)
        raise ClusterError(f"{what} not ready after {timeout} s:\n{_tail(log)}")

    def stop(self) -> None:
        """Cancel every job, then stop each daemon this object started (by pid), newest first."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self._procs):
            self.run(["scancel", "--full", "-u", "root"], check=False)
            end = time.monotonic() + 30
            while time.monotonic() < end and self.run(["squeue", "-h"], check=False).stdout.strip():
                time.sleep(0.5)
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()


def start_cluster(root: Path, *, cpus: int | None = None) -> SlurmCluster:
    """Start munge, MariaDB, slurmdbd, slurmctld and slurmd under ``root``; the cluster is ready on return.

    Args:
        root: An empty folder (short enough for a Unix socket path, under ~80 characters).
        cpus: CPUs of the node (default: those this process may use).

    Raises:
        ClusterError: If a daemon did not come up (with its log), after stopping those that did.
    """
    ncpu = cpus or len(os.sched_getaffinity(0))
    cluster = SlurmCluster(root=root, cpus=ncpu, memory_mb=_memory_mb())
    for sub in ("bin", "etc", "log", "run", "state", "spool", "munge", "db"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # Snakemake's SLURM job step drops every SLURM_* variable, SLURM_CONF too, before its `srun`: a site
    # cluster's srun finds /etc/slurm/slurm.conf, this one's config is here. The real srun, with
    # SLURM_CONF put back, comes first on the jobs' PATH (no system file is touched).
    shim = root / "bin" / "srun"
    shim.write_text(f'#!/bin/sh\nSLURM_CONF="{cluster.conf}" exec {_which("srun")} "$@"\n')
    shim.chmod(0o755)
    try:
        _start_all(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_all(c: SlurmCluster) -> None:
    root = c.root
    if not _munge_answers():
        # SLURM 22.05's clients reach slurmdbd through munge's default socket whatever AuthInfo says,
        # so our munged (own key, own pid) listens there; an already running munged is used instead.
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        key = root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        c._start(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={MUNGE_SOCKET}",
                f"--pid-file={root / 'run' / 'munged.pid'}",
                f"--log-file={c.log_dir / 'munged.log'}",
                f"--seed-file={root / 'munge' / 'munge.seed'}",
            ],
        )
        c._await("munged", _munge_answers, c.log_dir / "munged.log", timeout=20)

    db_port, dbd_port, ctld_port, slurmd_port = (_free_port() for _ in range(4))
    datadir, db_sock, password = root / "db" / "data", root / "db" / "mysql.sock", secrets.token_hex(12)
    init = subprocess.run(
        [
            _which("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if init.returncode != 0:
        raise ClusterError(f"mariadb-install-db: {init.stderr[-2000:]}")
    c._start(
        "mariadbd",
        [
            _which("mariadbd"),
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={db_sock}",
            f"--port={db_port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            f"--pid-file={root / 'run' / 'mariadbd.pid'}",
            f"--log-error={c.log_dir / 'mariadbd.log'}",
            "--innodb-buffer-pool-size=64M",
            "--skip-name-resolve",
        ],
    )

    def sql(statement: str) -> bool:
        done = subprocess.run(
            [_which("mariadb"), "--no-defaults", f"--socket={db_sock}", "-u", "root", "-e", statement],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode == 0

    c._await("mariadbd", lambda: sql("SELECT 1"), c.log_dir / "mariadbd.log", timeout=90)
    for host in ("localhost", "127.0.0.1"):
        if not sql(
            f"CREATE USER 'slurm'@'{host}' IDENTIFIED BY '{password}'; "
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';"
        ):
            raise ClusterError("could not create the accounting database user")

    etc = root / "etc"
    common = ["AuthType=auth/munge", "SlurmUser=root"]
    dbd_conf = etc / "slurmdbd.conf"
    dbd_conf.write_text(
        "\n".join(
            [
                *common,
                "DbdHost=localhost",
                f"DbdPort={dbd_port}",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={db_port}",
                "StorageUser=slurm",
                f"StoragePass={password}",
                "StorageLoc=slurm_acct_db",
                f"LogFile={c.log_dir / 'slurmdbd.log'}",
                f"PidFile={root / 'run' / 'slurmdbd.pid'}",
                "DebugLevel=info",
                "",
            ]
        )
    )
    dbd_conf.chmod(0o600)  # slurmdbd refuses a readable password
    c.conf.write_text(
        "\n".join(
            [
                f"ClusterName={CLUSTER}",
                "SlurmctldHost=localhost",
                f"SlurmctldPort={ctld_port}",
                f"SlurmdPort={slurmd_port}",
                *common,
                "SlurmdUser=root",
                # A requeued job may start again after the credential lifetime (default 120 s).
                "AuthInfo=cred_expire=10",
                "CredType=cred/munge",
                # No cgroups in a container: processes are tracked through /proc, tasks are not bound.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU_Memory",
                "SchedulerType=sched/backfill",
                # Scheduling passes every 2 s (a requeued job starts soon after it is eligible).
                "SchedulerParameters=sched_interval=2,bf_interval=2",
                "MpiDefault=none",
                "ReturnToService=2",
                "SlurmdParameters=config_overrides",
                # Short waits: a requeued or cancelled job is killed 5 s after its SIGTERM.
                "KillWait=5",
                "MinJobAge=600",
                "InactiveLimit=0",
                "JobRequeue=1",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
                f"SlurmctldLogFile={c.log_dir / 'slurmctld.log'}",
                f"SlurmdLogFile={c.log_dir / 'slurmd.log'}",
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=localhost",
                f"AccountingStoragePort={dbd_port}",
                "JobAcctGatherType=jobacct_gather/linux",
                "JobAcctGatherFrequency=30",
                "JobCompType=jobcomp/none",
                f"NodeName=localhost CPUs={c.cpus} RealMemory={c.memory_mb} State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    c._start("slurmdbd", [_which("slurmdbd"), "-D"])
    c._await(
        "slurmdbd",
        lambda: c.run(["sacctmgr", "-n", "list", "cluster"], check=False).returncode == 0,
        c.log_dir / "slurmdbd.log",
    )
    c.run(["sacctmgr", "-i", "add", "cluster", CLUSTER])
    c.run(["sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={CLUSTER}", "Description=mrisr tests"])
    c.run(["sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}", f"Cluster={CLUSTER}"])
    c._start("slurmctld", [_which("slurmctld"), "-D", "-i"])
    c._await(
        "slurmctld",
        lambda: c.run(["scontrol", "ping"], check=False).stdout.count("UP") > 0,
        c.log_dir / "slurmctld.log",
    )
    c._start("slurmd", [_which("slurmd"), "-D"])

    def idle() -> bool:
        states = c.run(["sinfo", "-h", "-o", "%t"], check=False).stdout.split()
        return "idle" in states

    c._await("slurmd", idle, c.log_dir / "slurmd.log")
    c._await("sacct", lambda: c.run(["sacct", "-n", "-X"], check=False).returncode == 0, c.log_dir / "slurmdbd.log")
