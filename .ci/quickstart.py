"""Print one line of the README's Quick start block: `demo` (line 1) or `test` (line 2).

CI runs exactly what the README tells a newcomer to run, so a missing install
step fails CI instead of the newcomer.
"""

import re
import sys
from pathlib import Path

readme = Path(__file__).resolve().parents[1] / "README.md"
section = readme.read_text(encoding="utf-8").split("## Quick start", 1)[1]
block = re.search(r"```[a-z]*\n(.*?)```", section, re.DOTALL)
if block is None:
    sys.exit("README.md: no fenced code block under '## Quick start'")
lines = [line for line in block.group(1).splitlines() if line.strip()]
if len(lines) != 2:
    sys.exit(f"README.md: the Quick start block must hold exactly two commands, found {len(lines)}")
print(lines[{"demo": 0, "test": 1}[sys.argv[1]]])
