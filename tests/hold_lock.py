"""Hold a folder's lock from another process, as a running trainer would (tests and the fault probe).

    python tests/hold_lock.py FOLDER PURPOSE [LOCK_NAME [SECONDS]]

prints "held" once it holds ``FOLDER/LOCK_NAME`` (default ``.lock``) and keeps it for SECONDS (default 600).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kdmcse_base.files import LOCK_FILE, folder_lock  # noqa: E402

folder, purpose, *rest = sys.argv[1:]
name = rest[0] if rest else LOCK_FILE
seconds = float(rest[1]) if len(rest) > 1 else 600.0
with folder_lock(Path(folder), purpose, name=name):
    print("held", flush=True)
    time.sleep(seconds)
