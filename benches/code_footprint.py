#!/usr/bin/env python3
"""Code footprint per request: the distinct 64-byte lines of machine code that run on (nearly)
every request, from a callgrind profile of the bench server under load (--dump-instr=yes
--compress-pos=no). When a server's per-request code is larger than the first-level
instruction cache (64 KiB per core on the VM this was written on; plain axum's request path is
already ~64 KiB), every such line is fetched again on each request, so lines a layer adds cost
more than their instruction count says. This is a property of the code and its layout, not of
the run's timing, so it compares builds where wall-clock and cachegrind miss counts (which move
by tens of lines with code alignment alone) cannot.

    cargo build --release --features axum --example http_bench_server
    B=target/release/examples/http_bench_server
    taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --dump-instr=yes --compress-pos=no \
        --callgrind-out-file=/tmp/fp.out $B tollgate-allow-noheaders 127.0.0.1:18101 &
    sleep 5; callgrind_control -i on     # count the load only, not start-up (clock calibration)
    N=$(taskset -c 1 wrk -t1 -c32 -d6s http://127.0.0.1:18101/ | awk '/requests in/ {print $1}')
    callgrind_control -d; kill %1; wait   # the dump is /tmp/fp.out.1
    python3 benches/code_footprint.py /tmp/fp.out.1 $N

Prints the lines run at least 0.5 times per request (all code, and the limiter side: functions
of tollgate, papaya, seize, arc_swap, quanta, foldhash, governor, dashmap), the distinct
instructions among them (which, unlike lines, do not depend on where functions happen to be
aligned: moving one function shifts others across line boundaries, ±10 lines in all), then the
limiter side's functions by lines.
"""
import collections
import sys

LIMITER_SIDE = ("tollgate", "papaya", "arc_swap", "seize", "quanta", "foldhash", "governor", "dashmap")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, requests = sys.argv[1], int(sys.argv[2])
    executed, owner, names = collections.Counter(), {}, {}
    function, after_calls = None, False
    with open(path) as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                # Compressed names: `(id) name` where first seen (as a function or a callee),
                # `(id)` after.
                text = line.partition("=")[2].strip()
                if text.startswith("(") and ")" in text:
                    ident, _, name = text[1:].partition(")")
                    name = name.strip()
                    text = names.setdefault(ident, name) if name else names.get(ident, ident)
                if line.startswith("fn="):
                    function = text
            elif line.startswith("calls="):
                after_calls = True  # the next cost line is the call's inclusive cost
            elif line.startswith("0x"):
                if after_calls:
                    after_calls = False
                    continue
                fields = line.split()
                if len(fields) >= 3:
                    address = int(fields[0], 16)
                    executed[address] += int(fields[2])
                    owner[address] = function or ""
            else:
                after_calls = False
    hot = [a for a, n in executed.items() if n >= 0.5 * requests]
    lines = {a >> 6 for a in hot}
    per_function = collections.defaultdict(set)
    for a in hot:
        if any(p in owner[a] for p in LIMITER_SIDE):
            per_function[owner[a]].add(a >> 6)
    limiter = set().union(*per_function.values()) if per_function else set()
    own = [a for a in hot if any(p in owner[a] for p in LIMITER_SIDE)]
    print(f"code lines run per request: {len(lines)} ({len(lines) * 64 / 1024:.1f} KiB); "
          f"limiter side: {len(limiter)}; distinct instructions: {len(hot)} (limiter side {len(own)}); "
          f"instructions per request: {sum(executed.values()) / requests:.0f}")
    try:
        for function, fl in sorted(per_function.items(), key=lambda kv: -len(kv[1]))[:20]:
            print(f"{len(fl):5}  {function[:150]}")
    except BrokenPipeError:  # piped into `head`
        pass


if __name__ == "__main__":
    main()
