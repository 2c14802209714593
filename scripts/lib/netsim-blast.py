"""netsim-blast.py: the traffic and the meter of `scripts/netsim rate-check`.

Each role runs inside one namespace (ip netns exec):
  sink PORT SECONDS N        accept N tcp connections on PORT, discard what they send,
                             end when all N closed (at most SECONDS)
  send ADDR PORT SECONDS     send zeros to ADDR:PORT for SECONDS as fast as tcp goes
  meter START END DEV...     in the switch namespace: read DEV's byte counters from
                             /proc/net/dev START s and END s after it began; print
                             `DEV RX_BPS TX_BPS` (bit/s over that window) per DEV
The meter reads the counters of its own namespace directly (no process start
between the two reads), so the window is exact to a few microseconds.
"""
import socket
import sys
import threading
import time


def sink(port, seconds, n):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    srv.settimeout(0.2)
    end = time.monotonic() + seconds
    threads = []

    def drain(conn):
        conn.settimeout(1.0)
        try:
            while conn.recv(1 << 20):
                pass
        except OSError:
            pass
        conn.close()

    while time.monotonic() < end and len(threads) < n:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threads.append(threading.Thread(target=drain, args=(conn,), daemon=True))
        threads[-1].start()
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))


def send(addr, port, seconds):
    end = time.monotonic() + seconds
    buf = bytes(1 << 16)
    for _ in range(50):  # the sink may start a moment later
        try:
            s = socket.create_connection((addr, port), timeout=2)
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit(f"netsim-blast: cannot connect to {addr}:{port}")
    s.settimeout(1.0)
    try:
        while time.monotonic() < end:
            s.send(buf)
    except OSError:
        pass
    s.close()


def counters():
    out = {}
    with open("/proc/net/dev") as f:
        for line in f.readlines()[2:]:
            dev, rest = line.split(":", 1)
            v = rest.split()
            out[dev.strip()] = (int(v[0]), int(v[8]))  # rx bytes, tx bytes
    return out


def meter(start, end, devs):
    t0 = time.monotonic()
    time.sleep(max(0.0, start - (time.monotonic() - t0)))
    a, ta = counters(), time.monotonic()
    time.sleep(max(0.0, end - (time.monotonic() - t0)))
    b, tb = counters(), time.monotonic()
    for d in devs:
        rx = (b[d][0] - a[d][0]) * 8 / (tb - ta)
        tx = (b[d][1] - a[d][1]) * 8 / (tb - ta)
        print(f"{d} {rx:.0f} {tx:.0f}")


def main(argv):
    if len(argv) >= 4 and argv[0] == "sink":
        sink(int(argv[1]), float(argv[2]), int(argv[3]))
    elif len(argv) >= 4 and argv[0] == "send":
        send(argv[1], int(argv[2]), float(argv[3]))
    elif len(argv) >= 4 and argv[0] == "meter":
        meter(float(argv[1]), float(argv[2]), argv[3:])
    else:
        sys.exit("usage: netsim-blast.py sink PORT S N | send ADDR PORT S | meter START END DEV...")


if __name__ == "__main__":
    main(sys.argv[1:])
