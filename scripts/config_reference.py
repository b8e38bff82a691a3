"""Print the config reference (every key of the experiment YAML with its type, default and description) as
Markdown, from the pydantic models in llm_trainer/config/:

    .venv/bin/python scripts/config_reference.py > docs/CONFIG.md

tests/test_config_reference.py fails when docs/CONFIG.md differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llm_trainer.config.reference import render_markdown  # noqa: E402


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
