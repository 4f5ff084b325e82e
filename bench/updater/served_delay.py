#!/usr/bin/env python3
"""Time from `good` to the new address being served (bench/updater.sh).

For each sample: change one host's address over a keep-alive HTTP
connection, take the time the `good` answer arrived, then query the
responder over UDP (no EDNS, so the A record's RDATA ends the answer)
every 0.2 ms until it returns the new address. Samples are spaced by a
random pause of 0-250 ms. Prints median, p90, p99 and
max in milliseconds. Standard library only.

Not a tight loop: on a 2-core machine, this process and the responder
worker answering it back to back took the CPU that the change needed on
its way (store, MariaDB, the follower), and the tool measured mostly
itself: p99 40-106 ms tight against 7-14 ms with the pause, alternating
runs on MariaDB (bench/README.md). The pause bounds the resolution at
0.2 ms plus one query.

usage: served_delay.py UPDATER_PORT DNS_PORT BASIC_AUTH HOSTS SAMPLES
"""
import http.client
import random
import socket
import statistics
import struct
import sys
import time


# Seconds between two queries for the same sample.
POLL_PAUSE = 0.0002


def query(name, qid):
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def main():
    http_port, dns_port, auth, hosts, samples = sys.argv[1:6]
    hosts, samples = int(hosts), int(samples)
    conn = http.client.HTTPConnection("127.0.0.1", int(http_port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    delays = []
    for i in range(samples):
        # A random pause, so samples do not fall into step with a periodic
        # reader on the responder side (it polls the change log until the
        # store pushes changes).
        time.sleep(random.uniform(0, 0.25))
        host = f"h{(i % hosts) + 1}.dyn.example.net"
        ip = f"10.250.{(i // 250) % 250}.{i % 250 + 1}"
        conn.request("GET", f"/nic/update?hostname={host}&myip={ip}",
                     headers={"Authorization": "Basic " + auth, "User-Agent": "delay/1"})
        body = conn.getresponse().read().decode()
        good_at = time.monotonic()
        if not body.startswith("good"):
            sys.exit(f"unexpected answer {body!r} for {host} {ip}")
        want = socket.inet_aton(ip)
        packet = query(host, i & 0xFFFF)
        while True:
            time.sleep(POLL_PAUSE)
            sock.sendto(packet, ("127.0.0.1", int(dns_port)))
            try:
                answer = sock.recv(512)
            except socket.timeout:
                continue
            ancount = struct.unpack(">H", answer[6:8])[0]
            if ancount and answer[-4:] == want:
                delays.append((time.monotonic() - good_at) * 1000)
                break
            if time.monotonic() - good_at > 10:
                sys.exit(f"{host} not served as {ip} within 10 s")
    delays.sort()
    pick = lambda p: delays[min(len(delays) - 1, int(len(delays) * p / 100))]
    print(f"good->served ms over {len(delays)} samples: median {statistics.median(delays):.1f} "
          f"p90 {pick(90):.1f} p99 {pick(99):.1f} max {delays[-1]:.1f}")


if __name__ == "__main__":
    main()
