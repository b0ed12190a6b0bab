#!/usr/bin/env python3
"""Checks the shape of the code, as issue 12 set it: no import circle between the modules of a
crate (every `crate::x` edge outside test modules counts), which fails the check; and functions
over 70 lines outside tests, which are listed as work left (they do not fail it).

Usage: tools/code_shape.py [crate ...]   (default: every crate of the workspace)"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["protocol", "net", "config", "storage", "broker", "client", "cli"]
LONG_LINES = 70


def edges_of(src: pathlib.Path) -> dict:
    edges = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        top = rel.parts[0].removesuffix(".rs")
        if top in ("lib", "main") or "tests" in rel.parts or top == "tests":
            continue
        text = f.read_text().split("#[cfg(test)]")[0]
        for m in re.finditer(r"crate::(\w+)", text):
            if m.group(1) != top:
                edges.setdefault(top, set()).add(m.group(1))
    return edges


def cycles_of(edges: dict) -> set:
    found = set()

    def walk(node, path):
        for n in sorted(edges.get(node, ())):
            if n in path:
                cycle = path[path.index(n):]
                k = cycle.index(min(cycle))
                found.add(tuple(cycle[k:] + cycle[:k]))
            elif len(path) < 10:
                walk(n, path + [n])

    for n in sorted(edges):
        walk(n, [n])
    return found


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(unsafe\s+)?(const\s+)?fn\s+(\w+)")


def code_of(line: str) -> str:
    code = re.sub(r'"(\\.|[^"\\])*"', '""', line.split("//")[0])
    return re.sub(r"b?'(\\.|[^'\\])'", "''", code)


def long_functions(src: pathlib.Path):
    for f in sorted(src.rglob("*.rs")):
        if f.name in ("tests.rs", "schema.rs"):
            continue
        lines = f.read_text().split("#[cfg(test)]")[0].splitlines()
        for i, line in enumerate(lines):
            m = FN.match(line)
            if not m:
                continue
            depth, started, j = 0, False, i
            while j < len(lines):
                code = code_of(lines[j])
                depth += code.count("{") - code.count("}")
                started |= "{" in code
                if (started and depth <= 0) or (not started and code.rstrip().endswith(";")):
                    break
                j += 1
            if started and j - i + 1 > LONG_LINES:
                yield f"{f.relative_to(ROOT)}:{i + 1} {m.group(6)} ({j - i + 1} lines)"


def main() -> int:
    crates = sys.argv[1:] or CRATES
    failed = False
    for crate in crates:
        src = ROOT / crate / "src"
        for cycle in sorted(cycles_of(edges_of(src))):
            print(f"import circle in {crate}: " + " -> ".join(cycle + (cycle[0],)))
            failed = True
        for f in long_functions(src):
            print(f"over {LONG_LINES} lines (work left): {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
