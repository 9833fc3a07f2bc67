"""Run the real ``rkvideo watch`` (or any rkvideo command) with the test-double runtimes.

    python tests/doubles/run_daemon.py watch DIR --db PATH --config PATH [--once]

The daemon code, the database and the files are real; only the vision
encoder and the LLM are the doubles of ``fake_runtime``, registered for the
``*.fakevision`` / ``*.fakellm`` model files the config names, and the kill
points are an observer of the daemon (controlled by environment variables,
see there).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doubles import fake_runtime  # noqa: E402

fake_runtime.install()

from rkvideo import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
