"""What Prefloop writes is readable by its own user only: the data directory, the SQLite database and its WAL, the
secret key and exports, whatever the umask of the shell that started it."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_a_fresh_and_an_old_data_directory_are_owner_only(tmp_path):
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "db.sqlite3").write_bytes(b"")
    (old / "db.sqlite3").chmod(0o644)
    for data_dir in (tmp_path / "fresh", old):
        env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "PREFLOOP_SECRET_KEY"}}
        env.update(PREFLOOP_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings")
        script = (
            "import django; django.setup(); from django.core.management import call_command; "
            "from django.db import connection; call_command('migrate', verbosity=0); "
            "connection.cursor().execute('PRAGMA journal_mode=WAL'); "
            "from django.conf import settings; p = settings.EXPORTS_DIR / 'x' / 'pairs.jsonl'; "
            "p.parent.mkdir(parents=True); p.write_text('{}')"
        )
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, preexec_fn=lambda: os.umask(0o022))
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "secret_key") == 0o600
        assert mode(data_dir / "db.sqlite3") == 0o600
        assert mode(data_dir / "exports") == 0o700 and mode(data_dir / "exports" / "x" / "pairs.jsonl") == 0o600
