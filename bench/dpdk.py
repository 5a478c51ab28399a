#!/usr/bin/python3
"""bench/dpdk.py - the DPDK path side by side with the kernel transport,
Postfix smtpd and smtp-sink (issue 3, part 6).

One run measures, on this machine:

1. SMTP transactions/s on one worker core on the DPDK path: sluiced
   (transport dpdk, one worker, net_memif server, the whole process pinned
   to the server core) and sluice-bench (DPDK, net_memif client, pinned to
   the client core); 1 KB body, one message per connection, PIPELINING on.
2. The same workload with smtp-source on loopback against sluiced on the
   kernel transport, Postfix smtpd without a queue (before-queue proxy to
   smtp-sink) and smtp-sink, through bench/accept.py's rig (cgroup v2 CPU
   of the server's process tree, same pinning).
3. CPU per transaction as valgrind --tool=callgrind instruction counts of
   sluiced on both transports: counters zeroed (callgrind_control -z) just
   before a run of N sessions and dumped (-d) just after; the figure is the
   difference between two runs (N1, N2 sessions) divided by N2 - N1, so
   start-up and the fixed idle time around each run cancel out.
4. Memory per idle established connection: the stack's connection state
   (dp_stack_conn_size() + its flow-table slot, from sluice-bench
   --conn-size) against the Linux kernel's, measured as the slab growth
   (/proc/meminfo Slab) while N idle loopback connections are open.

Both sluiced configurations: one worker, spool without fdatasync
(spool.sync: false), delivery discard. Progress on stderr, the markdown
report on stdout; --write-results rewrites this script's section of
bench/RESULTS.md (between its two marker lines).
"""

import argparse
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
import accept as A  # noqa: E402  (the rig's helpers: cgroups, servers, smtp-source)

SECTION_START = "<!-- dpdk.py: start of its section (rewritten by dpdk.py --write-results) -->"
SECTION_END = "<!-- dpdk.py: end of its section -->"
SERVER_IP, CLIENT_IP, SMTP_PORT = "10.78.0.2", "10.78.0.1", 2525
# What the DPDK worker loop calls to do work (sluiced's wake callback is op_wake).
WORK_FNS = ("dp_stack_input", "dp_stack_poll", "tx_flush", "op_wake")
GOALS = {"txn_s": 100000, "instr": 20000, "bytes": 512, "vs_kernel": 5.0}

SLUICED_CONF = """\
# sluiced for bench/dpdk.py: one worker, spool without fdatasync, discard.
server: {{hostname: bench.test, workers: 1, transport: {transport}}}
listen: [{{address: "{listen}"}}]
smtp: {{message_size_max: 50m, recipients_max: 1000, greet_pause: 0}}
spool: {{directory: "{dir}/spool", sync: false}}
delivery: {{method: discard}}
log: {{level: warn}}
"""
DPDK_PART = """\
dpdk:
  eal: "{eal}"
  port: 0
  address: {ip}/24
"""


def log(msg):
    A.log(msg)


class BenchError(Exception):
    pass


def eal(prefix, role, sock, mac, core):
    return ("--no-huge --no-shconf --no-pci -l %d --file-prefix %s --log-level=notice "
            "--vdev=net_memif0,role=%s,socket=%s,mac=%s" % (core, prefix, role, sock, mac))


def parse_summary(text):
    m = re.search(r"^bench_summary (.*)$", text, re.M)
    if not m:
        raise BenchError("no bench_summary line from sluice-bench: %s" % text[-800:])
    out = {}
    for kv in m.group(1).split():
        k, v = kv.split("=", 1)
        out[k] = float(v) if "." in v else int(v)
    return out


# --------------------------------------------------------------------------
# sluiced on either transport, optionally under callgrind

class SluicedRun:
    def __init__(self, rig, name, transport, callgrind=False):
        self.rig, self.name, self.transport, self.callgrind = rig, name, transport, callgrind
        self.dir = os.path.join(rig.workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.sock = os.path.join(self.dir, "memif.sock")
        self.prefix = "slbench%d%s" % (os.getpid(), name.replace("-", ""))

    def start(self):
        a = self.rig.args
        if self.transport == "dpdk":
            listen = "0.0.0.0:%d" % SMTP_PORT
        else:
            self.port = A.free_port()
            listen = "127.0.0.1:%d" % self.port
        conf = SLUICED_CONF.format(transport=self.transport, listen=listen, dir=self.dir)
        if self.transport == "dpdk":
            conf += DPDK_PART.format(eal=eal(self.prefix + "s", "server", self.sock,
                                             "02:00:00:78:00:02", a.server_cpu), ip=SERVER_IP)
        self.conf = os.path.join(self.dir, "sluiced.yaml")
        with open(self.conf, "w") as f:
            f.write(conf)
        argv = ["taskset", "-c", str(a.server_cpu)]
        if self.callgrind:
            self.cg_prefix = os.path.join(self.dir, "callgrind.out")
            argv += ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s.%%p" % self.cg_prefix]
        argv += [self.rig.sluiced, "-c", self.conf]
        self.logf = os.path.join(self.dir, "sluiced.out")
        out = open(self.logf, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.dir)
        out.close()
        deadline = time.monotonic() + (120 if self.callgrind else 60)
        if self.transport == "kernel":
            A.wait_banner(self.port, 120 if self.callgrind else 30, self.proc)
            return
        while True:
            if self.proc.poll() is not None:
                raise BenchError("sluiced (%s) exited with %s at start: %s" % (
                    self.name, self.proc.returncode, self.tail()))
            if "listening on" in self.tail():
                return
            if time.monotonic() > deadline:
                raise BenchError("sluiced (%s) did not start: %s" % (self.name, self.tail()))
            time.sleep(0.2)

    def tail(self):
        try:
            with open(self.logf, errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120 if self.callgrind else 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        if rc not in (0, -signal.SIGTERM):
            raise BenchError("sluiced (%s) exited with status %s: %s" % (self.name, rc, self.tail()))

    # ---- callgrind control

    def cg(self, cmd):
        r = subprocess.run(["callgrind_control", cmd, str(self.proc.pid)], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0 or "OK" not in r.stdout:
            raise BenchError("callgrind_control %s: %s" % (cmd, (r.stdout + r.stderr).strip()[-300:]))

    def dumps(self):
        d = os.path.dirname(self.cg_prefix)
        base = os.path.basename(self.cg_prefix) + ".%d." % self.proc.pid
        return sorted((os.path.join(d, f) for f in os.listdir(d) if f.startswith(base)),
                      key=lambda p: int(p.rsplit(".", 1)[1]))


def run_bench(rig, srv, sessions, concurrency, duration=None, tag="run", timeout=30):
    """sluice-bench against the DPDK sluiced; returns its summary."""
    a = rig.args
    ids = None
    argv = ["taskset", "-c", str(a.client_cpu), rig.bench,
            "--eal", eal(srv.prefix + "c", "client", srv.sock, "02:00:00:78:00:01", a.client_cpu),
            "--local", "%s/24" % CLIENT_IP, "--server", "%s:%d" % (SERVER_IP, SMTP_PORT),
            "--sessions", str(sessions), "--concurrency", str(concurrency), "--messages", "1",
            "--body-size", "1024", "--pipelining", "on", "--timeout", str(timeout),
            "--progress", "0", "--quiet"]
    if duration:
        argv += ["--duration", str(duration)]
    outp = os.path.join(srv.dir, "bench-%s.out" % tag)
    limit = (duration or 0) + timeout + 120 + sessions / 50.0
    with open(outp, "wb") as out:
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=limit)
    with open(outp, errors="replace") as f:
        text = f.read()
    s = parse_summary(text)
    if p.returncode != 0 or s["sessions_failed"] or s["lost"] or s["accepted"] != s["messages_sent"]:
        raise BenchError("sluice-bench (%s): exit %d, %s" % (tag, p.returncode,
                         re.search(r"^bench_summary .*$", text, re.M).group(0)))
    return s


def run_source(rig, port, n, tag):
    """smtp-source, 1 KB, one message per connection, 20 sessions."""
    argv = rig.client_argv(port, ["-s", str(rig.args.sessions), "-l", "1024"], n)
    got, _ = rig.run_clients([(argv, n)], rig.workdir, 1)
    if got != n:
        raise BenchError("smtp-source (%s): %d of %d messages" % (tag, got, n))


# --------------------------------------------------------------------------
# measurements

def measure_dpdk_rate(rig):
    a = rig.args
    srv = SluicedRun(rig, "dpdk-rate", "dpdk")
    srv.start()
    runs = []
    try:
        log("DPDK: warm-up, %d sessions" % a.dpdk_warmup)
        run_bench(rig, srv, a.dpdk_warmup, a.concurrency, tag="warmup")
        for i in range(a.repeat):
            s = run_bench(rig, srv, a.dpdk_sessions, a.concurrency, duration=a.duration, tag="rate%d" % i)
            log("DPDK: %d sessions in %.2f s: %.0f txn/s (p50 %d ms, p99 %d ms)" % (
                s["sessions"], s["elapsed_s"], s["txn_per_s"], s["lat_ms_p50"], s["lat_ms_p99"]))
            runs.append(s)
    finally:
        srv.stop()
    return runs


class SluicedKernel(A.Sluiced):
    """accept.py's sluiced row, with dpdk.py's configuration (sync off)."""
    name = "sluiced-kernel"
    label = "sluiced kernel transport, spool sync off, discard"

    def start(self):
        self.port = A.free_port()
        os.makedirs(os.path.join(self.dir, "spool"), exist_ok=True)
        self.conf = os.path.join(self.dir, "sluiced.yaml")
        with open(self.conf, "w") as f:
            f.write(SLUICED_CONF.format(transport="kernel", listen="127.0.0.1:%d" % self.port,
                                        dir=self.dir))
        p = self.popen([self.rig.sluiced, "-c", self.conf], "sluiced.out")
        A.wait_banner(self.port, 30, p)


def measure_loopback(rig):
    wl = [w for w in A.WORKLOADS if w.name == "1k-conn"][0]
    out = []
    for cls in (SluicedKernel, A.PostfixProxy, A.SmtpSink):
        server = cls(rig)
        server.cg = rig.cpu.new(server.name)
        log("loopback: %s" % server.label)
        try:
            server.start()
            rig.versions[server.name] = server.version()
            rig.warmup(server)
            runs = [rig.measure(server, wl) for _ in range(rig.args.repeat)]
            bad = [r for r in runs if not r.ok]
            if bad:
                raise BenchError(bad[0].error)
            runs.sort(key=lambda r: r.cpu_ms_per_msg)
            r = runs[(len(runs) - 1) // 2]
            log("  %s: %d msgs, %.0f msg/s, %.3f ms CPU/msg" % (server.name, r.n, r.rate, r.cpu_ms_per_msg))
            out.append((server, r, runs))
        finally:
            server.stop()
            server.cg.remove()
    return out


def callgrind_calls(path, name):
    """How often `name` was called, summed over its callers, from a raw dump
    (cfn= names a callee, the calls= line after it counts the calls)."""
    names, cur, n = {}, None, 0
    pat = re.compile(r"cfn=\((\d+)\)(?: (.*))?")
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("cfn="):
                m = pat.match(line)
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2).strip()
                    cur = names.get(m.group(1))
            elif line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2).strip()
            elif line.startswith("calls=") and cur == name:
                n += int(line[6:].split()[0])
    return n


def callgrind_self(path):
    """{function: self Ir} from a raw dump: cost lines after fn=, except the
    one after each calls= line (that is the call's inclusive cost)."""
    names, cur, after_call, out = {}, None, False, {}
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2).strip()
                cur = names.get(m.group(1)) if m else None
                after_call = False
            elif line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2).strip()
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    if after_call:
                        after_call = False
                    elif cur is not None:
                        out[cur] = out.get(cur, 0) + int(parts[1])
    return out


def callgrind_totals(path):
    """(total Ir, {function: inclusive Ir}) of one dump."""
    total = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
                break
    r = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                       capture_output=True, text=True, timeout=300)
    incl = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(\S+?):(\S+)", line)
        if m:
            fn = m.group(3).split()[0]
            incl.setdefault(fn, int(m.group(1).replace(",", "")))
    return total, incl


def measure_callgrind(rig, transport):
    a = rig.args
    srv = SluicedRun(rig, "callgrind-" + transport, transport, callgrind=True)
    srv.start()
    res = []
    try:
        log("callgrind %s: warm-up" % transport)
        if transport == "dpdk":
            run_bench(rig, srv, 100, 16, tag="cg-warmup", timeout=120)
        else:
            run_source(rig, srv.port, 100, "cg-warmup")
        def dump():
            before = set(srv.dumps())
            srv.cg("-d")
            deadline = time.monotonic() + 60
            new = []
            while not new and time.monotonic() < deadline:
                new = [p for p in srv.dumps() if p not in before and os.path.getsize(p) > 0]
                time.sleep(0.2)
            if not new:
                raise BenchError("callgrind: no dump file appeared")
            time.sleep(1)
            return new[-1]

        for n in a.cg_sessions:
            srv.cg("-z")
            t0 = time.monotonic()
            if transport == "dpdk":
                s = run_bench(rig, srv, n, 16, tag="cg%d" % n, timeout=120)
                rate = s["txn_per_s"]
            else:
                run_source(rig, srv.port, n, "cg%d" % n)
                rate = n / (time.monotonic() - t0)
            path = dump()
            total, incl = callgrind_totals(path)
            passes, work = 0, total
            if transport == "dpdk":
                # The poll loop's own code (rx_burst with the driver's RX,
                # clock reads, the idle callback, naps) runs whether or not
                # there is work, and under valgrind the worker spins while
                # the spool writer waits for its turn: take it out, keep
                # what the loop calls for work.
                passes = callgrind_calls(path, "dp_stack_poll")
                loop = incl.get("worker_thread", 0) - sum(incl.get(f, 0) for f in WORK_FNS)
                work = total - loop
            log("callgrind %s: %d sessions: %d Ir (%.0f per txn; %.0f per txn without the poll "
                "loop's own code, %d loop passes), %.0f txn/s under callgrind" % (
                    transport, n, total, total / n, work / n, passes, rate))
            res.append({"n": n, "total": total, "incl": incl, "rate": rate, "passes": passes,
                        "work": work, "self": callgrind_self(path)})
    finally:
        srv.stop()
    return res


KERNEL_CONN_SCRIPT = r"""
import os, resource, socket, sys, time
n = int(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
want = 2 * n + 100
if hard != resource.RLIM_INFINITY and hard < want:
    n = (hard - 100) // 2   # without CAP_SYS_RESOURCE the hard limit stays
    want = 2 * n + 100
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
def slab():
    with open("/proc/meminfo") as f:
        for l in f:
            if l.startswith("Slab:"):
                return int(l.split()[1]) * 1024
def slabinfo():
    out = {}
    try:
        with open("/proc/slabinfo") as f:
            for l in f.readlines()[2:]:
                p = l.split()
                out[p[0]] = int(p[1]) * int(p[3])
    except OSError:
        pass
    return out
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(4096)
addr = ls.getsockname()
time.sleep(0.5)
s0, i0 = slab(), slabinfo()
cs, ss = [], []
for i in range(n):
    c = socket.socket(); c.connect(addr); cs.append(c)
    s, _ = ls.accept(); ss.append(s)
# exchange one line each way, as an SMTP session does before it idles
for c, s in zip(cs, ss):
    s.sendall(b"220 x\r\n"); c.recv(64); c.sendall(b"EHLO y\r\n"); s.recv(64)
time.sleep(1.0)
s1, i1 = slab(), slabinfo()
grow = sorted(((i1.get(k, 0) - i0.get(k, 0), k) for k in i1), reverse=True)[:6]
sock = sum(i1.get(k, 0) - i0.get(k, 0) for k in ("TCP", "sock_inode_cache", "filp", "dentry"))
print("slab_delta=%d sockets=%d socket_caches=%d" % (s1 - s0, 2 * n, sock))
print("top=" + ",".join("%s:%d" % (k, d) for d, k in grow if d > 0))
"""


def measure_memory(rig):
    r = subprocess.run([rig.bench, "--conn-size"], capture_output=True, text=True, timeout=30)
    m = re.search(r"dp_stack_conn_size=(\d+) flow_slot=(\d+)", r.stdout)
    if not m:
        raise BenchError("sluice-bench --conn-size: %r" % r.stdout)
    conn, slot = int(m.group(1)), int(m.group(2))
    n = rig.args.idle_conns
    kern = []
    for _ in range(3):
        k = subprocess.run(["/usr/bin/python3", "-c", KERNEL_CONN_SCRIPT, str(n)], capture_output=True,
                           text=True, timeout=300)
        mm = re.search(r"slab_delta=(-?\d+) sockets=(\d+) socket_caches=(-?\d+)", k.stdout)
        if not mm:
            raise BenchError("kernel idle connections: %s" % (k.stdout + k.stderr)[-500:])
        top = re.search(r"top=(.*)", k.stdout)
        socks = int(mm.group(2))
        rig.idle_conns = socks // 2
        kern.append((int(mm.group(1)) / socks, top.group(1) if top else "", int(mm.group(3)) / socks))
    kern.sort()
    return conn, slot, kern[len(kern) // 2], [x[0] for x in kern]


# --------------------------------------------------------------------------
# report

def fmt_int(x):
    return "{:,}".format(int(round(x)))


def report(rig, dpdk_runs, loop, cg, mem):
    a = rig.args
    m = rig.machine()
    L = []
    L.append("Command: `%s`" % " ".join(["/usr/bin/python3", "bench/dpdk.py"] + sys.argv[1:]))
    L.append("")
    L.append("- date: %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    L.append("- machine: %d cores, %s, kernel %s; load average before / after: %s / %s "
             "(shared with other builds: expect noise)" % (
                 m["nproc"], m["cpu"], m["kernel"], " ".join(rig.load_before), " ".join(rig.load_after)))
    L.append("- sluiced: %s" % rig.sluiced_info)
    L.append("- sluiced configuration (both transports): one worker, `spool.sync: false`, "
             "`delivery.method: discard`, log level warn")
    L.append("- pinning: sluiced (every thread) on core %d, the client (sluice-bench or smtp-source) "
             "on core %d" % (a.server_cpu, a.client_cpu))
    L.append("- DPDK: both EALs `--no-huge --no-shconf --no-pci`, net_memif over a unix socket "
             "(sluiced role=server, sluice-bench role=client), %d sessions at once, "
             "1 KB body, one message per connection, PIPELINING on" % a.concurrency)
    L.append("")
    L.append("### Transactions per second, 1 KB, one message per connection")
    L.append("")
    L.append("| server | client | messages | wall s | txn/s (wall) | server CPU ms/txn | txn/s per server core |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    rates = sorted(s["txn_per_s"] for s in dpdk_runs)
    med = rates[(len(rates) - 1) // 2]
    ds = sorted(dpdk_runs, key=lambda s: s["txn_per_s"])[(len(dpdk_runs) - 1) // 2]
    rng = " (runs: %s)" % ", ".join(fmt_int(r) for r in rates) if len(rates) > 1 else ""
    L.append("| sluiced, DPDK (memif), 1 worker | sluice-bench DPDK | %d | %.2f | **%s**%s | busy-polls: 1 core | **%s** |" % (
        ds["accepted"], ds["elapsed_s"], fmt_int(med), rng, fmt_int(med)))
    kern_core = None
    for server, r, runs in loop:
        per_core = 1000.0 / r.cpu_ms_per_msg if r.cpu_ms_per_msg else 0
        if server.name == "sluiced-kernel":
            kern_core = per_core
        L.append("| %s | smtp-source -s %d | %d | %.2f | %s | %.3f | %s |" % (
            server.label, a.sessions, r.n, r.wall, fmt_int(r.rate), r.cpu_ms_per_msg, fmt_int(per_core)))
    L.append("")
    L.append("txn/s per server core: the DPDK worker busy-polls its core, so its figure is the wall "
             "rate with the whole of sluiced on one core; for the loopback servers it is 1 / (server "
             "CPU per transaction), CPU from %s." % rig.cpu.kind)
    L.append("")
    L.append("### Instructions per transaction (callgrind, server only)")
    L.append("")
    L.append("| transport | sessions N1 / N2 | Ir per txn, all (N1 / N2) | (Ir N2 − Ir N1) / (N2 − N1) | "
             "**per txn, poll loop's own code out** (N1 / N2) | loop passes per txn (N2) | "
             "txn/s under callgrind (N2) |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    cg_per = {}
    for tr, res in cg:
        r1, r2 = res[0], res[-1]
        n1, n2 = r1["n"], r2["n"]
        diff = (r2["total"] - r1["total"]) / float(n2 - n1)
        per1, per2 = r1["work"] / n1, r2["work"] / n2
        cg_per[tr] = per2
        L.append("| %s | %d / %d | %s / %s | %s | **%s / %s** | %s | %.0f |" % (
            tr, n1, n2, fmt_int(r1["total"] / n1), fmt_int(r2["total"] / n2), fmt_int(diff),
            fmt_int(per1), fmt_int(per2),
            "%.0f" % (r2["passes"] / float(n2)) if r2["passes"] else "blocks in epoll_wait", r2["rate"]))
    L.append("")
    L.append("Counted: every thread of sluiced (worker, spool writer, queue manager, main), user space "
             "only, from `callgrind_control -z` just before the client starts to `-d` just after it "
             "ends. The DPDK worker busy-polls, and under valgrind (one thread at a time) it spins "
             "whenever it waits for the spool writer, so its raw count grows with wall time, not with "
             "work. The bold figure keeps, of the worker thread, only what its loop calls for work — "
             "`%s` (frames in: Ethernet/IP/TCP and the SMTP engine, spool submit; timers; frames "
             "out; spool completions) — plus all the other threads; it leaves out the loop's own code: "
             "`rte_eth_rx_burst` (memif RX, frame copies included), clock reads, the idle callback and "
             "naps. The kernel transport blocks in epoll_wait, so all of its count is work, but its "
             "TCP/IP runs in the kernel and is not in it." % "`, `".join(WORK_FNS))
    L.append("")
    # top functions (inclusive, per transaction) of the N2 run
    for tr, res in cg:
        r2 = res[-1]
        rows = sorted(((v / float(r2["n"]), fn) for fn, v in r2["incl"].items()), reverse=True)
        keep = [r for r in rows if not r[1].startswith(("0x", "???", "start_thread", "clone", "(below",
                                                         "worker_thread", "worker_loop", "worker_main"))][:16]
        L.append("%s, N2 run, inclusive instructions per transaction by function (all passes): %s" % (
            tr, "; ".join("`%s` %s" % (fn, fmt_int(v)) for v, fn in keep)))
        L.append("")
        top = sorted(((v / float(r2["n"]), fn) for fn, v in r2["self"].items()), reverse=True)[:20]
        L.append("%s, N2 run, self instructions per transaction, top 20%s: %s" % (
            tr, " (hex: unnamed code in the memif driver)" if tr == "dpdk" else "",
            "; ".join("`%s` %s" % (fn, fmt_int(v)) for v, fn in top)))
        L.append("")
    conn, slot, (kmed, ktop, kcaches), kall = mem
    L.append("### Memory per idle established connection")
    L.append("")
    L.append("| | bytes |")
    L.append("|---|---:|")
    L.append("| sluice stack: `struct dp_tcb` (dp_stack_conn_size()) + flow-table slot (2 pointers) | **%d** (%d + %d) |" % (
        conn + slot, conn, slot))
    L.append("| Linux kernel: slab growth per socket, %s idle loopback connections (median of 3: %s) | **%s** |" % (
        fmt_int(rig.idle_conns), ", ".join(fmt_int(x) for x in kall), fmt_int(kmed)))
    L.append("| Linux kernel, same run: growth of the caches `TCP`, `sock_inode_cache`, `filp`, `dentry` "
             "per socket (/proc/slabinfo) | %s |" % fmt_int(kcaches))
    L.append("")
    L.append("Kernel: /proc/meminfo `Slab` before and after opening the connections and exchanging one "
             "line each way, divided by the sockets (two per loopback connection, each one side's "
             "state); the caches that grew most: %s. The sluice figure excludes the receive and send "
             "rings, which an idle connection does not hold (docs/TCP.md), and the SMTP session." %
             ktop.replace(",", ", "))
    L.append("")
    L.append("### Goals (issue 3)")
    L.append("")
    ratio = med / kern_core if kern_core else 0
    cgd = cg_per.get("dpdk")
    L.append("| goal | measured | met |")
    L.append("|---|---:|---|")
    L.append("| ≥ %s txn/s on one worker core | %s | %s |" % (fmt_int(GOALS["txn_s"]), fmt_int(med),
             "yes" if med >= GOALS["txn_s"] else "**no**"))
    L.append("| ≤ %s instructions per transaction, stack included | %s | %s |" % (
        fmt_int(GOALS["instr"]), fmt_int(cgd) if cgd else "n/a",
        "yes" if cgd and cgd <= GOALS["instr"] else "**no**"))
    L.append("| ≤ %d bytes per idle established connection | %d | %s |" % (
        GOALS["bytes"], conn + slot, "yes" if conn + slot <= GOALS["bytes"] else "**no**"))
    L.append("| ≥ %.0f× the kernel transport per core | %.1f× (%s vs %s txn/s per core) | %s |" % (
        GOALS["vs_kernel"], ratio, fmt_int(med), fmt_int(kern_core or 0),
        "yes" if ratio >= GOALS["vs_kernel"] else "**no**"))
    L.append("")
    L.append("- total run time: %.0f s" % rig.elapsed)
    return "\n".join(L)


def write_results(text):
    path = os.path.join(BENCH_DIR, "RESULTS.md")
    with open(path) as f:
        old = f.read()
    section = (SECTION_START + "\n\n## DPDK path (bench/dpdk.py)\n\n"
               "Generated by `bench/dpdk.py --write-results`; dpdk.py rewrites only what is between "
               "its own two markers.\n\n" + text + "\n\n" + SECTION_END)
    if SECTION_START in old and SECTION_END in old:
        a = old.index(SECTION_START)
        b = old.index(SECTION_END) + len(SECTION_END)
        new = old[:a] + section + old[b:]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(new)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluiced", required=True, help="sluiced built with libdpdk")
    ap.add_argument("--bench", required=True, help="sluice-bench (build dir bench/sluice-bench)")
    ap.add_argument("--dpdk-sessions", type=int, default=300000, help="sessions per DPDK run (default 300000)")
    ap.add_argument("--duration", type=int, default=10, help="no DPDK session starts after S seconds (default 10)")
    ap.add_argument("--concurrency", type=int, default=128, help="sluice-bench sessions at once (default 128)")
    ap.add_argument("--dpdk-warmup", type=int, default=2000, help="unmeasured DPDK sessions first (default 2000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per server; the median is reported (default 3)")
    ap.add_argument("--cg-sessions", default="500,2000", help="N1,N2 sessions for callgrind (default 500,2000)")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle kernel connections (default 10000)")
    ap.add_argument("--scale", type=float, default=1.0, help="accept.py's message count factor (loopback rows)")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source parallel sessions (default 20)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: small counts, one run each")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: rate,loopback,callgrind,memory")
    ap.add_argument("--workdir", default=os.path.join(BENCH_DIR, ".work"))
    ap.add_argument("--write-results", action="store_true", help="rewrite this script's section of RESULTS.md")
    args = ap.parse_args()
    args.cg_sessions = [int(x) for x in args.cg_sessions.split(",")]
    if args.quick:
        args.dpdk_sessions, args.duration, args.dpdk_warmup, args.repeat = 20000, 5, 500, 1
        args.cg_sessions, args.idle_conns, args.scale = [100, 300], 2000, 0.1
    if os.geteuid() != 0:
        raise SystemExit("dpdk.py: run as root (EAL, cgroups, Postfix)")
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate", A.SMTP_SOURCE):
        if not shutil.which(tool):
            raise SystemExit("dpdk.py: %s is missing (Debian packages valgrind, postfix)" % tool)
    # accept.py's rig: its argument names
    args.cpu_accounting, args.timeout, args.keep = None, 600, True
    args.servers = args.workloads = None
    rig_args = argparse.Namespace(**vars(args))
    rig_args.warmup = 40 if args.quick else 300
    rig = A.Rig(rig_args)
    rig.bench = os.path.join(rig.workdir, "sluice-bench")
    shutil.copy2(args.bench, rig.bench)
    rig.load_before = open("/proc/loadavg").read().split()[:3]
    skip = set(args.skip.split(",")) if args.skip else set()
    t0 = time.monotonic()
    failed = False
    dpdk_runs, loop, cg, mem = [], [], [], (0, 0, (0, "", 0), [0])
    try:
        if "rate" not in skip:
            dpdk_runs = measure_dpdk_rate(rig)
        if "loopback" not in skip:
            loop = measure_loopback(rig)
        if "callgrind" not in skip:
            cg = [("dpdk", measure_callgrind(rig, "dpdk")), ("kernel", measure_callgrind(rig, "kernel"))]
        if "memory" not in skip:
            mem = measure_memory(rig)
    except (BenchError, A.BenchError, subprocess.TimeoutExpired) as e:
        log("FAILED: %s" % e)
        failed = True
    rig.elapsed = time.monotonic() - t0
    rig.load_after = open("/proc/loadavg").read().split()[:3]
    rig.cpu.close()
    if failed or not (dpdk_runs and loop and cg and mem[0]):
        log("incomplete run (work dir %s): no report" % rig.workdir)
        return 1
    text = report(rig, dpdk_runs, loop, cg, mem)
    print(text)
    if args.write_results:
        write_results(text)
        log("wrote bench/RESULTS.md (dpdk.py's section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
