"""``make_engine`` on a SQLite file this process already has open (two app factories in one
process, the benchmark's helpers, a CLI command in the app's process)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from sqlalchemy import text

from server.db import make_engine


def _write_and_close_in_another_process(path) -> None:
    code = ("import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], timeout=5)\n"
            "c.execute('INSERT INTO t VALUES (2)')\n"
            "c.commit()\n"
            "c.close()\n")
    subprocess.run([sys.executable, "-c", code, str(path)], timeout=60, check=True)


def test_a_second_engine_keeps_the_locks_of_the_first(tmp_path):
    """In WAL mode each connection holds a shared lock on the database file while it is open:
    the last one to close (the one that gets an exclusive lock) removes the WAL and its index.
    A second engine must not drop the first one's lock (closing any descriptor of the file
    does, under POSIX), or another process's close removes them under the first, whose next
    write fails with "disk I/O error"."""
    path = tmp_path / "main.db"
    first = make_engine(f"sqlite:///{path}")
    try:
        with first.connect() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            conn.commit()
            make_engine(f"sqlite:///{path}").dispose()  # the same file, the same process
            _write_and_close_in_another_process(path)
            assert (tmp_path / "main.db-wal").exists()  # this process is still connected
            conn.execute(text("INSERT INTO t VALUES (3)"))
            conn.commit()
            assert conn.execute(text("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 2, 3]
    finally:
        first.dispose()


def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "new" / "vault.db"
    engine = make_engine(f"sqlite:///{path}")
    engine.dispose()
    assert path.stat().st_mode & 0o777 == 0o600
    sqlite3.connect(path).close()
