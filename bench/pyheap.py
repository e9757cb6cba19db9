# pyheap.py MIB: a python3 heap of about MIB MiB (ints, strings, lists, dicts), then
# "ready" and idle: the python3 target of bench/run.sh.
import sys, time
mib = int(sys.argv[1]) if len(sys.argv) > 1 else 512
objs = []
size = 0
i = 0
while size < mib << 20:
    s = f"object-{i}-" * 4
    objs.append({"n": i, "s": s, "l": [i, i * 2, i * 3]})
    size += 350
    i += 1
print("ready", len(objs), flush=True)
while True:
    time.sleep(1)
