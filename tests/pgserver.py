"""A throwaway PostgreSQL server on 127.0.0.1 for the store's tests (Debian's ``postgresql`` package).

`start` runs ``initdb`` and ``pg_ctl start`` in a new folder under /tmp with its own socket folder
and a free port (so a cluster the package may have started elsewhere does not matter), and `stop`
runs ``pg_ctl stop -m immediate`` and removes the folder. initdb, pg_ctl and postgres refuse to run
as root: as root they run as the ``postgres`` user (created by the package; else ``nobody``) through
subprocess's ``user=``/``group=``. A watchdog process stops the server when the test process dies
without its teardown (SIGKILL), so no server outlives a run. Test settings: fsync off (a test
database need not survive a power cut; the trd process's acknowledged records must survive its own
kill, which does not depend on fsync).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_WATCHDOG = """import os, shutil, subprocess, sys, time
owner, pg_ctl, root, uid, gid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
while True:
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
kw = {"user": uid, "group": gid, "extra_groups": []} if uid >= 0 else {}
subprocess.run([pg_ctl, "-D", root + "/data", "-m", "immediate", "stop"], cwd=root, capture_output=True, **kw)
shutil.rmtree(root, ignore_errors=True)
"""


def bindir() -> str | None:
    """The newest ``/usr/lib/postgresql/<N>/bin`` holding initdb (Debian), else initdb's folder on
    PATH, else None; ``TRD_PG_BINDIR`` overrides. (``pg_config --bindir`` is not used: Debian's
    libpq-dev answers it even where no server is installed.)"""
    given = os.environ.get("TRD_PG_BINDIR")
    if given:
        return given if os.access(os.path.join(given, "initdb"), os.X_OK) else None
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(os.path.join(d, "initdb"), os.X_OK)]
    if found:
        return max(found, key=lambda d: int(re.search(r"/(\d+)/bin$", d).group(1)))
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@dataclass
class PgServer:
    root: str
    port: int
    pg_ctl: str
    run_as: dict
    watchdog: subprocess.Popen

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> PgServer:
    """A running server; RuntimeError with its log when it cannot start."""
    binaries = bindir()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL server binaries (apt-get install postgresql, or set TRD_PG_BINDIR)")
    root = tempfile.mkdtemp(prefix="trd-pg-")  # under /tmp (1777): the postgres user can enter it
    run_as: dict = {}
    if os.geteuid() == 0:
        user = next((p for p in pwd.getpwall() if p.pw_name == "postgres"), None) or pwd.getpwnam("nobody")
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        os.chown(root, user.pw_uid, user.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
    pg_ctl = os.path.join(binaries, "pg_ctl")

    def run(*command: str) -> None:
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True, text=True, timeout=120, **run_as)

    try:
        run(os.path.join(binaries, "initdb"), "-D", f"{root}/data", "-U", "postgres", "-E", "UTF8", "--locale=C",
            "--auth=trust", "--no-sync")
        os.mkdir(f"{root}/sock")
        if run_as:
            os.chown(f"{root}/sock", run_as["user"], run_as["group"])
        port = _free_port()
        run(pg_ctl, "-D", f"{root}/data", "-l", f"{root}/server.log", "-w", "-t", "60", "-o",
            f"-k {root}/sock -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off", "start")
    except subprocess.CalledProcessError as exc:
        log = open(f"{root}/server.log").read()[-2000:] if os.path.exists(f"{root}/server.log") else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"{' '.join(exc.cmd)} failed: {exc.stderr}\n{log}") from None
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), pg_ctl, root,
                                 str(run_as.get("user", -1)), str(run_as.get("group", -1))],
                                start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd="/")
    return PgServer(root, port, pg_ctl, run_as, watchdog)


def stop(server: PgServer) -> None:
    server.watchdog.kill()
    server.watchdog.wait()
    subprocess.run([server.pg_ctl, "-D", f"{server.root}/data", "-m", "immediate", "-w", "stop"], cwd=server.root,
                   capture_output=True, env={"PATH": "/usr/bin:/bin"}, **server.run_as)
    shutil.rmtree(server.root, ignore_errors=True)


def create_database(server: PgServer) -> str:
    """A new empty database on ``server``; its URL."""
    import sqlalchemy as sa

    name = "t_" + os.urandom(6).hex()
    admin = sa.create_engine(server.url().replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return server.url(name)
