"""The command line's entry point: ``python run_pipeline.py --help`` lists the commands.

Each command is a function in runner/commands.py (its table, COMMANDS), its options are in runner/arguments.py,
and runner/cli.py's ``main`` runs it and turns errors into one line and an exit status.
"""

import gc
import sys

from runner.cli import main

if __name__ == "__main__":
    try:
        status = main()
    finally:
        # Torch, ZenML and MLflow leave about a million objects (1.18 M after a training run). The interpreter's last
        # collection walked them for 4-5 s after the command's last line, a stop by SIGTERM included. Frozen, they
        # are left to the exit: atexit handlers (MLflow's, ZenML's) still run, and what main opened is closed by now.
        gc.freeze()
    sys.exit(status)
