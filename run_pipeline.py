"""The command line's entry point: ``python run_pipeline.py --help`` lists the commands.

Each command is a function in runner/commands.py (its table, COMMANDS), its options are in runner/arguments.py,
and runner/cli.py's ``main`` runs it and turns errors into one line and an exit status.
"""

import sys

from runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
