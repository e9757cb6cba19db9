"""bench/lazy-restart.py IMG PIDFILE: run `./cryo restart IMG --lazy --detach`, and print
the seconds until the restored tree runs (its pidfile is written then) and until cryo
returns (every page is in), separated by a space."""
import os
import subprocess
import sys
import time

img, pidfile = sys.argv[1], sys.argv[2]
if os.path.exists(pidfile):
    os.unlink(pidfile)
t0 = time.monotonic()
p = subprocess.Popen(["./cryo", "restart", img, "--lazy", "--detach", "--pidfile", pidfile])
running = None
while p.poll() is None:
    if running is None and os.path.exists(pidfile) and os.path.getsize(pidfile) > 0:
        running = time.monotonic() - t0
    time.sleep(0.0005)
done = time.monotonic() - t0
if p.returncode != 0:
    sys.exit(f"restart --lazy failed: exit {p.returncode}")
print("%.3f %.3f" % (running if running is not None else done, done))
