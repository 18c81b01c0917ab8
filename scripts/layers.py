#!/usr/bin/env python3
"""The layering rule of ARCHITECTURE.md, checked: every top-level module of
src/ may use only the modules its row of the "Layers" table names.

A use is any `crate::NAME` path in a module's files (`use` lines, grouped
`use crate::{a, b}` and paths written inline), comments and test code aside
(files named tests.rs or simulation.rs, and an inline `#[cfg(test)] mod`,
which this project writes last in a file).
A module of src/ with no row fails too, so a new one must be placed.
Exit 1 naming each file and the use that breaks the rule.

`python3 scripts/layers.py --print` prints the uses found, module by module.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
TEST_FILES = {"tests.rs", "simulation.rs"}
# log's codec layer: the files that know what a payload means. The rest of
# log (the bytes layer) may use neither them nor core.
LOG_CODEC = {"codec", "decode", "encode", "events", "wire", "snapshot"}


def rules():
    """The "Layers" table of ARCHITECTURE.md: module -> the modules it may use."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    parts = text.split("\n## Layers\n", 1)
    section = parts[1].split("\n## ", 1)[0] if len(parts) == 2 else ""
    allowed = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"`\w+`", cells[0]):
            continue
        allowed[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[1]))
    return allowed


def module_of(path):
    relative = path.relative_to(SRC)
    if len(relative.parts) == 1:
        return relative.stem
    return relative.parts[0]


def production_code(text):
    """The text without comments and without an inline `#[cfg(test)] mod x { .. }`."""
    text = re.sub(r"//.*", "", text)
    match = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\(crate\))?\s+)?mod \w+\s*\{", text, re.MULTILINE)
    return text[: match.start()] if match else text


def top_names(group):
    """The top-level names of a `use crate::{...}` group."""
    names, depth, current = [], 0, ""
    for char in group:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            names.append(current)
            current = ""
            continue
        if depth == 0:
            current += char
    names.append(current)
    return {re.match(r"\s*(\w+)", n).group(1) for n in names if re.match(r"\s*\w+", n)}


def uses(text):
    found = set(re.findall(r"\bcrate::(\w+)", text))
    for start in [m.end() for m in re.finditer(r"\bcrate::\{", text)]:
        depth, end = 1, start
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        found |= top_names(text[start : end - 1])
    return found


def main():
    allowed = rules()
    found = {}
    for path in sorted(SRC.rglob("*.rs")):
        if path.name in TEST_FILES or path.parent == SRC and path.name in ("lib.rs", "main.rs"):
            continue
        module = module_of(path)
        for used in uses(production_code(path.read_text())) - {module}:
            found.setdefault(module, {}).setdefault(used, []).append(path.relative_to(ROOT))
    if "--print" in sys.argv:
        for module in sorted(found):
            print(f"{module}: {', '.join(sorted(found[module]))}")
        return 0
    errors = []
    for module in sorted({module_of(p) for p in SRC.rglob("*.rs") if p.parent != SRC or p.name not in ("lib.rs", "main.rs")}):
        if module not in allowed:
            errors.append(f"src/{module}: no row in ARCHITECTURE.md's Layers table")
    for module, used in sorted(found.items()):
        for name, paths in sorted(used.items()):
            if name not in allowed.get(module, set()):
                errors.append(f"{paths[0]}: {module} uses {name}, which its row of the Layers table does not allow")
    for path in sorted((SRC / "log").glob("*.rs")):
        if path.stem in LOG_CODEC:
            continue
        text = production_code(path.read_text())
        for name in sorted(({"core"} & uses(text)) | (LOG_CODEC & set(re.findall(r"\bsuper::(\w+)", text)))):
            errors.append(f"{path.relative_to(ROOT)}: log's bytes layer uses {name}")
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 1
    print(f"layers: {len(found)} modules use only what ARCHITECTURE.md's Layers table allows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
