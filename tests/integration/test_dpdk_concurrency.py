"""10,000 concurrent connections to sluiced on DPDK (issue 3, part 5c).

The kernel in a network namespace (the far side of a net_tap port) opens
10,000 TCP connections to sluiced and reads the 220 banner on each; while
all of them are open, sluiced's dp_stats (SIGUSR1) must count at least
10,000 connections. Then every 50th connection sends a message and every
connection QUITs; every message accepted with 250 must be in the Maildir,
and the stack's connection gauge must fall back to about zero (TIME_WAIT is
shortened to 1 s so that this is quick).

sluiced's configuration is what lets it hold that many: smtp.connections_max
(per worker) above 10,000, and dpdk.connections_max / buffer_size (per
worker stack; see docs/CONFIG.md). Once with one worker and 10,000
connections; once with two workers sharing one queue pair (software
dispatch and TX through worker 0 under load) and 4,000.
"""

import json
import re
import subprocess
import sys
import time

import pytest

from conftest import wait_for_maildir
from dpdk_netns import ADDR
from test_dpdk_workers import dp_stats, dpdk_sluice

N = 10000
EVERY = 50

CLIENT = r"""
import asyncio, json, resource, sys, time

ADDR, N, EVERY = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = N + 1024
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))

async def reply(r, timeout=60):
    # one SMTP reply, possibly multi-line; returns (code, last line)
    while True:
        line = await asyncio.wait_for(r.readline(), timeout)
        if not line:
            raise ConnectionError("closed by the server")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()

async def open_one(i, sem, conns, errors):
    async with sem:
        for attempt in range(3):
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(ADDR, 2525), 30)
                code, text = await reply(r)
                if code != 220:
                    raise ConnectionError(f"banner {text!r}")
                conns[i] = (r, w)
                return
            except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                err = f"{type(e).__name__}: {e}"
        errors.append(f"connection {i}: {err}")

async def serve(i, sem, r, w, res):
    async with sem:
        try:
            if i % EVERY == 0:
                w.write(b"EHLO ns.test.example\r\n")
                code, _ = await reply(r)
                assert code == 250, code
                for cmd, want in ((b"MAIL FROM:<alice@client.test.example>", 250),
                                  (b"RCPT TO:<bob@test.example>", 250), (b"DATA", 354)):
                    w.write(cmd + b"\r\n")
                    code, text = await reply(r)
                    assert code == want, (cmd, text)
                w.write(b"Subject: c10k %d\r\nMessage-ID: <c10k-%d@client.test.example>\r\n\r\n"
                        b"message on connection %d of the 10k test\r\n.\r\n" % (i, i, i))
                code, text = await reply(r)
                if code == 250:
                    res["accepted"].append(i)
                else:
                    res["errors"].append(f"connection {i}: end of data: {text}")
            w.write(b"QUIT\r\n")
            code, text = await reply(r)
            if code != 221:
                res["errors"].append(f"connection {i}: QUIT: {text}")
            else:
                res["quit"] += 1
        except Exception as e:
            res["errors"].append(f"connection {i}: {type(e).__name__}: {e}")
        finally:
            w.close()

async def main():
    conns, errors = {}, []
    t0 = time.monotonic()
    sem = asyncio.Semaphore(256)
    await asyncio.gather(*(open_one(i, sem, conns, errors) for i in range(N)))
    print(json.dumps({"held": len(conns), "errors": errors[:20], "nerrors": len(errors),
                      "open_s": round(time.monotonic() - t0, 2)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t1 = time.monotonic()
    res = {"accepted": [], "errors": [], "quit": 0}
    sem = asyncio.Semaphore(512)
    await asyncio.gather(*(serve(i, sem, r, w, res) for i, (r, w) in sorted(conns.items())))
    res["serve_s"] = round(time.monotonic() - t1, 2)
    res["nerrors"] = len(res["errors"])
    res["errors"] = res["errors"][:20]
    print(json.dumps(res), flush=True)

asyncio.run(main())
"""


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("workers,extra,n", [
    (1, "", N),
    # both workers' frames through one queue: software dispatch under load.
    # Fewer connections: two busy-polling workers and the client share the
    # two cores of the test machines.
    (2, "  queues: 1\n", 4000),
], ids=["one_worker_10k", "two_workers_one_queue_4k"])
def test_10k_concurrent_connections(tmp_path, workers, extra, n):
    with dpdk_sluice(tmp_path, server=f", workers: {workers}", smtp=", connections_max: 10500",
                     dpdk="  connections_max: 12000\n  buffer_size: 16k\n  time_wait: 1s\n" +
                     extra) as s:
        t0 = time.monotonic()
        rss0 = rss_kib(s.proc.pid)
        p = subprocess.Popen(["ip", "netns", "exec", s.ns, sys.executable, "-c", CLIENT, ADDR,
                              str(n), str(EVERY)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            line = p.stdout.readline()
            assert line, f"client: got no output, want a summary; stderr:\n" \
                         f"{p.stderr.read().decode(errors='replace')[-3000:]}"
            held = json.loads(line)
            assert held["held"] == n, f"got {held['held']} connections with a 220 banner, " \
                                      f"want {n}: {held}\n{s.log()[-2000:]}"
            st = dp_stats(s, workers)
            rss1 = rss_kib(s.proc.pid)
            conns = sum(w["conns"] for w in st.values())
            assert conns >= n, f"got dp_stats conns={conns} with {n} connections open, want " \
                               f">= {n}: {st}"
            p.stdin.write(b"go\n")
            p.stdin.flush()
            line = p.stdout.readline()
            assert line, f"client: got no result, want one; stderr:\n" \
                         f"{p.stderr.read().decode(errors='replace')[-3000:]}"
            res = json.loads(line)
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        want = n // EVERY
        assert res["nerrors"] == 0, f"got {res['nerrors']} failed sessions, want none: " \
                                    f"{res['errors']}"
        assert len(res["accepted"]) == want, \
            f"got {len(res['accepted'])} messages accepted, want {want}"
        assert res["quit"] == n, f"got {res['quit']} QUITs answered 221, want {n}"
        msgs = wait_for_maildir(s.maildir, want, timeout=60)
        got = sorted(int(re.search(rb"^Subject: c10k (\d+)", m.raw, re.M).group(1))
                     for m in msgs)
        assert got == sorted(res["accepted"]), \
            f"got {len(got)} messages in the Maildir, want the {want} accepted (same numbers)"
        # Every connection closed: only a few may linger (TIME_WAIT is 1 s).
        deadline = time.monotonic() + 20
        while True:
            st = dp_stats(s, workers)
            conns = sum(w["conns"] for w in st.values())
            if conns <= 10 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert conns <= 10, f"got dp_stats conns={conns} after every client quit, want ~0: {st}"
        if workers > 1:
            acc = [w.get("tcp_accepted", 0) for w in st.values()]
            assert all(a > n // 4 for a in acc), f"got tcp_accepted {acc}, want a share each"
            drops = sum(w.get("dpdk_dispatch_drop", 0) for w in st.values())
            print(f"dispatch drops: {drops}")
        print(f"\n{n} connections, {workers} worker(s): open {held['open_s']} s, "
              f"serve {res['serve_s']} s, total "
              f"{time.monotonic() - t0:.1f} s; sluiced RSS {rss0} KiB idle, {rss1} KiB with {n} "
              f"connections ({(rss1 - rss0) * 1024 // n} bytes each); stats {st}")
