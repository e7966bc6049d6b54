#!/usr/bin/env python3
"""Locked read-modify-writes (x86-64 `lock`-prefixed instructions and `xchg`) executed per
operation, from a callgrind profile taken with --dump-instr=yes: a deterministic proxy for how a
path scales on many cores (each one is a full barrier, and one on a line that every core writes
bounces that line between them), which a 2-core machine's timings cannot show.

    cargo build --release --features axum --example http_bench_server
    B=target/release/examples/http_bench_server
    TOLLGATE_BENCH_ONLY=tollgate-allow valgrind --tool=callgrind --dump-instr=yes \
        --toggle-collect='tokio::runtime::runtime::Runtime::block_on*' \
        --callgrind-out-file=/tmp/cg.out $B inproc 20000
    python3 benches/locked_rmw.py /tmp/cg.out $B 100000     # inproc: 5 rounds x 20000

Prints the total per operation and the functions they execute in (only the given binary's own
code, so libc's are not counted).
"""
import re
import subprocess
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    profile, binary, ops = sys.argv[1], sys.argv[2], int(sys.argv[3])
    name = binary.split("/")[-1]
    objects, counts = {}, {}
    addr, in_binary, after_calls = 0, False, False
    with open(profile) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^c?ob=\((\d+)\)(?: (.*))?$", line)
            if m:
                if m.group(2):
                    objects[m.group(1)] = m.group(2)
                if line.startswith("ob="):
                    in_binary = name in objects.get(m.group(1), "")
                continue
            if line.startswith("calls="):
                after_calls = True  # the next cost line is the callee's inclusive cost
                continue
            m = re.match(r"^(0x[0-9a-f]+|\+\d+|-\d+|\*)\s+\S+\s+(\d+)", line)
            if not m:
                continue
            a = m.group(1)
            if a.startswith("0x"):
                addr = int(a, 16)
            elif a[0] in "+-":
                addr += int(a)
            if after_calls:
                after_calls = False
                continue
            if in_binary:
                counts[addr] = counts.get(addr, 0) + int(m.group(2))
    disassembly = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", binary], capture_output=True, text=True, check=True
    ).stdout
    total, where, function = 0, {}, ""
    for line in disassembly.split("\n"):
        m = re.match(r"^[0-9a-f]+ <(.*)>:", line)
        if m:
            function = m.group(1)
            continue
        m = re.match(r"^\s*([0-9a-f]+):\s*(.*)", line)
        # `xchg` with a memory operand is implicitly locked; register forms (`xchg %ax,%ax` is
        # a 2-byte nop) are not.
        locked = m and (m.group(2).startswith("lock") or (m.group(2).startswith("xchg") and "(" in m.group(2)))
        if locked and int(m.group(1), 16) in counts:
            n = counts[int(m.group(1), 16)]
            total += n
            where[function[:120]] = where.get(function[:120], 0) + n
    print(f"locked read-modify-writes per operation: {total / ops:.2f}")
    for function, n in sorted(where.items(), key=lambda kv: -kv[1]):
        if n / ops >= 0.01:
            print(f"  {n / ops:6.2f}  {function}")


if __name__ == "__main__":
    main()
