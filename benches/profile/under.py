"""under.py FILE MESSAGES FREQ PATTERN...: from `perf script -F comm,ip,sym` output of a
`perf record --call-graph dwarf` run over MESSAGES messages at FREQ Hz, the CPU µs per
message of the samples with a frame matching each regular expression (and per thread name)."""
import re
import sys

path, n, freq = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
pats = [(p, re.compile(p)) for p in sys.argv[4:]]
count = {p: 0 for p, _ in pats}
by_comm = {}
total = 0


def flush(stack, comm):
    global total
    if not stack:
        return
    total += 1
    by_comm[comm] = by_comm.get(comm, 0) + 1
    text = "\n".join(stack)
    for p, r in pats:
        if r.search(text):
            count[p] += 1


stack, comm = [], None
with open(path, errors="replace") as f:
    for line in f:
        if not line.strip():
            flush(stack, comm)
            stack, comm = [], None
        elif not line.startswith((" ", "\t")):
            comm = line.split()[0]
        else:
            stack.append(line.strip())
flush(stack, comm)
us = 1e6 / freq / n
print(f"total {total * us:.1f} µs/msg")
for c, v in sorted(by_comm.items(), key=lambda x: -x[1]):
    print(f"  thread {c}: {v * us:.1f}")
for p, _ in pats:
    print(f"{count[p] * us:7.2f}  {p}")
