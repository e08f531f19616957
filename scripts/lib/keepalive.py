"""Hand-made keepalives for the benchmarks (scripts/bench-scale), sent from
a raw IPv4 socket so that every spoke can have its own (spoofed) source
address and port without a socket of its own. Auth "none": the wire format
of src/probe/wire.rs (docs/keepalive.md) inside VXLAN, inner source MAC =
the spoke's (02:4c + its overlay IPv4 address), inner destination the hub's.

    python3 keepalive.py one  NAME OVERLAY SRC SPORT
    python3 keepalive.py join PREFIX COUNT FIRST_OVERLAY SECONDS
    python3 keepalive.py steady PREFIX COUNT FIRST_OVERLAY SECONDS

Environment: HUB (underlay address, default 198.51.100.1), HUB_NAME (hub1),
VNI, PORT (4789). Spoke i of a PREFIX set is PREFIX + i zero-padded to
WIDTH (env, default 5) digits, overlay FIRST_OVERLAY + i, source
192.0.2.(1 + i % 254) or 203.0.113.(1 + i % 254) (alternating by i // 254),
port 41000 + i // 508. Every loop is bounded by COUNT and SECONDS.
"""

import ipaddress
import os
import socket
import struct
import sys
import time

HUB = os.environ.get("HUB", "198.51.100.1")
HUB_NAME = os.environ.get("HUB_NAME", "hub1").encode()
VNI = int(os.environ.get("VNI", "79"))
PORT = int(os.environ.get("PORT", "4789"))
WIDTH = int(os.environ.get("WIDTH", "5"))
HUB_MAC = bytes([2, 0x4C, 100, 64, 0, 1])  # 100.64.0.1
VXLAN = struct.pack("!BBBBI", 0x08, 0, 0, 0, VNI << 8)


def frame(name: bytes, overlay: int, counter: int) -> bytes:
    mac = bytes([2, 0x4C]) + overlay.to_bytes(4, "big")
    body = b"LVN1" + bytes([1, 0, 0, 0]) + counter.to_bytes(8, "big")
    body += bytes([len(name)]) + name + bytes([len(HUB_NAME)]) + HUB_NAME
    return VXLAN + HUB_MAC + mac + b"\x88\xb5" + body


def packet(src: str, sport: int, payload: bytes) -> bytes:
    # IP_HDRINCL: the kernel fills in the total length and the checksum
    # (and the id, left 0); UDP checksum 0 (none, allowed for IPv4).
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(src), socket.inet_aton(HUB))
    udp = struct.pack("!HHHH", sport, PORT, 8 + len(payload), 0)
    return ip + udp + payload


def source(i: int) -> tuple:
    net = "192.0.2." if (i // 254) % 2 == 0 else "203.0.113."
    return net + str(1 + i % 254), 41000 + i // 508


def spokes(prefix: str, count: int, first: str) -> list:
    base = int(ipaddress.IPv4Address(first))
    out = []
    for i in range(count):
        name = f"{prefix}{i:0{WIDTH}d}".encode()
        src, sport = source(i)
        out.append((name, base + i, src, sport))
    return out


def raw() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def send(s, pkt):
    try:
        s.sendto(pkt, (HUB, 0))
        return True
    except OSError:  # ENOBUFS under load: counted, not retried
        return False


def main():
    mode = sys.argv[1]
    s = raw()
    if mode == "one":
        name, overlay, src, sport = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
        ov = int(ipaddress.IPv4Address(overlay))
        ok = send(s, packet(src, sport, frame(name.encode(), ov, time.time_ns())))
        print(time.time_ns(), int(ok))
        return
    prefix, count, first, secs = sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
    sp = spokes(prefix, count, first)
    pkts = [packet(src, sport, frame(name, ov, 1)) for name, ov, src, sport in sp]
    # The counter is not checked under auth "none": the same bytes each round.
    if mode == "join":
        # Every spoke's first keepalive, evenly over SECONDS.
        sent = failed = 0
        t_first = time.time_ns()
        t0 = time.perf_counter()
        for k, p in enumerate(pkts):
            while time.perf_counter() < t0 + k * secs / count:
                pass
            if send(s, p):
                sent += 1
            else:
                failed += 1
        print(t_first, time.time_ns(), sent, failed)
    elif mode == "steady":
        # Every spoke once a second (evenly spread), for SECONDS; reports the
        # worst lateness of a keepalive against its schedule.
        rounds = int(secs)
        sent = failed = 0
        late = 0.0
        t0 = time.perf_counter()
        for r in range(rounds):
            for k, p in enumerate(pkts):
                due = t0 + r + k / count
                now = time.perf_counter()
                while now < due:  # sleeps, not spins: the hub needs the cores
                    time.sleep(due - now)
                    now = time.perf_counter()
                late = max(late, now - due)
                if send(s, p):
                    sent += 1
                else:
                    failed += 1
        print(sent, failed, f"{late:.3f}")
    else:
        sys.exit(f"unknown mode {mode}")


main()
