#!/usr/bin/python3
"""Durability benchmark (issue 5 part 6): what the durable accept costs.

Side by side in one run, servers pinned to one core (default 0), clients to
another (default 1), loopback only:

  accept   durable accepts/s, server CPU per message and fsyncs per message
           (1 KB, one message per connection, 20 and 100 parallel sessions,
           Postfix's smtp-source) for
             sluiced with group commit (default spool settings, discard),
             the same with spool.commit_delay 1ms (bigger batches),
             sluiced with one fdatasync per message (spool.commit_batch 1),
             Postfix with its queue on the same disk (accept.py's instance);
  latency  time from the client's final "." to the 250, sequential
           transactions on one connection (a small Python client), spool
           sync true and false side by side (the client alternates between
           the two servers), idle and with background sessions;
  lmtp     LMTP delivery into a private Dovecot: the spool is filled while
           the backend is down, then Dovecot starts and the drain is timed
           (messages/s, sluiced CPU per delivered message).

CPU comes from one cgroup v2 per server (accept.py's helpers, imported).
fsyncs are counted by the kernel's syscall tracepoints restricted to the
server's cgroup (`perf stat -a -G CGROUP -e syscalls:sys_enter_fdatasync,
syscalls:sys_enter_fsync`), in the same measured run: unlike strace this
does not stop the traced process, so it does not change the batching it
counts.

Run as root with Debian's Python (about 2 minutes; --parts picks a subset):
    /usr/bin/python3 bench/durable.py --sluiced build/control/sluiced [--write-results]
The report goes to stdout (markdown), progress to stderr; --write-results
also puts it into bench/RESULTS.md, in a section of its own below
accept.py's marker line (accept.py keeps it when it regenerates its tables).
"""

import argparse
import datetime
import json
import os
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

PERF = shutil.which("perf") or "/usr/bin/perf"
DOVECOT = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
SECTION_START = "<!-- durable.py: start of its section (rewritten by durable.py --write-results) -->"
SECTION_END = "<!-- durable.py: end of its section -->"
GOAL_RATIO = 20.0          # durable accepts per server CPU second vs Postfix
GOAL_FSYNC = 0.05          # fsyncs per message under load
GOAL_LAT_MS = 2.0          # added to the 250 by the group commit


def log(msg):
    sys.stderr.write("[durable %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


A.log = log


# --------------------------------------------------------------------------
# servers

class SluicedConf(A.Sluiced):
    """sluiced with a configuration written here (not a peers/ template)."""
    factor = 1
    spool_extra = ""
    delivery = "{method: discard}"
    extra = ""

    def conf_text(self):
        return ("server: {hostname: bench.test, workers: 1, transport: kernel}\n"
                'listen: [{address: "127.0.0.1:%d"}]\n'
                "smtp: {message_size_max: 50m, recipients_max: 1000}\n"
                'spool: {directory: "%s/spool"%s}\n'
                "delivery: %s\n%s"
                "log: {level: warn}\n" % (self.port, self.dir, self.spool_extra, self.delivery, self.extra))

    def start(self):
        self.port = A.free_port()
        os.makedirs(os.path.join(self.dir, "spool"), exist_ok=True)
        self.conf = os.path.join(self.dir, "sluiced.yaml")
        with open(self.conf, "w") as f:
            f.write(self.conf_text())
        chk = subprocess.run([self.rig.sluiced, "-c", self.conf, "--check"], capture_output=True,
                             text=True, timeout=60)
        if chk.returncode != 0:
            raise A.BenchError("sluiced -c %s --check: exit %d: %s" % (
                self.conf, chk.returncode, (chk.stderr or chk.stdout).strip()[:500]))
        p = self.popen([self.rig.sluiced, "-c", self.conf], "sluiced.out")
        A.wait_banner(self.port, 30, p)


class SluicedGroup(SluicedConf):
    name = "sluiced-group"
    label = "sluiced, group commit (default spool settings: sync true, commit_batch 1024)"
    spool_extra = ", sync: true"


class SluicedPerMsg(SluicedConf):
    name = "sluiced-batch1"
    label = "sluiced, one fdatasync per message (spool.commit_batch 1)"
    spool_extra = ", sync: true, commit_batch: 1"


class SluicedDelay(SluicedConf):
    name = "sluiced-delay1ms"
    label = "sluiced, group commit waiting 1 ms to gather more (spool.commit_delay 1ms)"
    spool_extra = ", sync: true, commit_delay: 1ms"


class SluicedNoSync(SluicedConf):
    name = "sluiced-nosync"
    label = "sluiced, spool sync false (no fdatasync: not durable)"
    spool_extra = ", sync: false"


class SluicedLmtp(SluicedConf):
    name = "sluiced-lmtp"
    label = "sluiced, LMTP delivery to a private Dovecot"
    spool_extra = ", sync: true"

    def __init__(self, rig, sock):
        SluicedConf.__init__(self, rig)
        self.delivery = "{method: lmtp, retry_min: 1s, retry_max: 1s}"
        self.extra = "lmtp: {default: \"unix:%s\", timeout: 30s}\n" % sock


class Postfix(A.PostfixQueue):
    label = "Postfix 3.7 smtpd + queue (cleanup fsyncs each queue file), discard transport"


# --------------------------------------------------------------------------
# fsync counting: syscall tracepoints for the server's cgroup

class FsyncCounter:
    EVENTS = ("syscalls:sys_enter_fdatasync", "syscalls:sys_enter_fsync")

    def __init__(self, cg, cpu, outdir):
        self.proc = None
        self.why = None
        self.out = os.path.join(outdir, "perf-fsync.csv")
        if not os.access(PERF, os.X_OK):
            self.why = "perf missing (apt-get install linux-perf)"
            return
        if not isinstance(cg, A.CgroupV2) or isinstance(cg, A.CgroupV1):
            self.why = "needs cgroup v2 accounting"
            return
        root = os.path.dirname(cpu.base)
        self.cgname = os.path.relpath(cg.path, root)

    def start(self):
        if self.why:
            return
        ev = ",".join(self.EVENTS)
        argv = [PERF, "stat", "-x", ",", "-o", self.out, "-a", "-e", ev,
                "-G", ",".join([self.cgname] * len(self.EVENTS))]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)   # perf opens its per-CPU events
        if self.proc.poll() is not None:
            self.why = "perf stat exited with %s" % self.proc.returncode

    def stop(self):
        """{'fdatasync': n, 'fsync': n} or None."""
        if self.why or self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.why = "perf stat did not stop"
            return None
        got = {}
        with open(self.out) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) > 3 and parts[2] in self.EVENTS:
                    try:
                        got[parts[2].split("sys_enter_")[1]] = int(parts[0])
                    except ValueError:
                        self.why = "perf: %s" % line.strip()
                        return None
        if len(got) != 2:
            self.why = "perf output not understood (%s)" % self.out
            return None
        return got


# --------------------------------------------------------------------------
# latency client: run as a subprocess pinned to the client core

def latency_client(ports, n, size):
    """n sequential transactions on one connection per port, alternating
    between the ports (so that every server sees the same machine noise);
    prints {port: [ms from the final "." to the 250, ...]}."""
    conns = []
    for port in ports:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append([s, b""])

    def reply(c):
        while True:
            while b"\r\n" not in c[1]:
                chunk = c[0].recv(65536)
                if not chunk:
                    raise SystemExit("connection closed")
                c[1] += chunk
            line, c[1] = c[1].split(b"\r\n", 1)
            if line[3:4] == b" ":
                return int(line[:3]), line

    def cmd(c, line, want):
        c[0].sendall(line + b"\r\n")
        code, text = reply(c)
        if code != want:
            raise SystemExit("%r: got %r, want %d" % (line, text, want))

    for c in conns:
        code, text = reply(c)
        if code != 220:
            raise SystemExit("banner %r" % text)
        cmd(c, b"EHLO latency.client.test", 250)
    body = (b"x" * 78 + b"\r\n") * max(1, size // 80)
    lat = {p: [] for p in ports}
    for i in range(n):
        for port, c in zip(ports, conns):
            cmd(c, b"MAIL FROM:<" + A.SENDER.encode() + b">", 250)
            cmd(c, b"RCPT TO:<" + A.RCPT.encode() + b">", 250)
            cmd(c, b"DATA", 354)
            c[0].sendall(b"Subject: latency %d\r\n\r\n" % i + body)
            t0 = time.perf_counter()
            c[0].sendall(b".\r\n")
            code, text = reply(c)
            t1 = time.perf_counter()
            if code != 250:
                raise SystemExit("end of data: got %r, want 250" % text)
            lat[port].append((t1 - t0) * 1000.0)
    for c in conns:
        cmd(c, b"QUIT", 221)
    json.dump({str(p): v for p, v in lat.items()}, sys.stdout)


def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# --------------------------------------------------------------------------
# Dovecot (LMTP only), as tests/integration/test_lmtp_dovecot.py sets it up

class Dovecot:
    def __init__(self, cpu):
        import pwd
        self.root = tempfile.mkdtemp(prefix="sluice-bench-dovecot-")
        os.chmod(self.root, 0o755)
        self.sock = os.path.join(self.root, "lmtp.sock")
        self.proc = None
        self.cg = cpu.new("dovecot")
        if os.getuid() == 0:
            pw = pwd.getpwnam("nobody")
            uid, gid, internal = pw.pw_uid, pw.pw_gid, "root"
        else:
            uid, gid, internal = os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name
        for d in ("mail", "home"):
            os.mkdir(os.path.join(self.root, d))
            os.chown(os.path.join(self.root, d), uid, gid)
        user = A.RCPT.split("@")[0]
        with open(os.path.join(self.root, "users"), "w") as f:
            f.write("%s:{PLAIN}secret::::::\n" % user)
        self.maildir = os.path.join(self.root, "mail", user)
        self.conf = os.path.join(self.root, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("""protocols = lmtp
instance_name = sluice-bench-%(pid)d
base_dir = %(r)s/run
state_dir = %(r)s/state
log_path = %(r)s/dovecot.log
default_internal_user = %(i)s
default_login_user = %(i)s
ssl = no
listen = 127.0.0.1
auth_username_format = %%Ln
mail_location = maildir:%(r)s/mail/%%u
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = %(r)s/users
}
userdb {
  driver = passwd-file
  args = %(r)s/users
  default_fields = uid=%(uid)d gid=%(gid)d home=%(r)s/home/%%u
}
service lmtp {
  unix_listener %(sock)s {
    mode = 0666
  }
}
lmtp_add_received_header = no
""" % {"pid": os.getpid(), "r": self.root, "i": internal, "uid": uid, "gid": gid, "sock": self.sock})

    def start(self, cpu_core):
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu_core), DOVECOT, "-c", self.conf, "-F"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=A.in_cgroup_preexec(self.cg))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise A.BenchError("dovecot exited with %s; log %s/dovecot.log" % (self.proc.returncode, self.root))
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(2)
                    s.connect(self.sock)
                return
            except OSError:
                time.sleep(0.05)
        raise A.BenchError("dovecot: no LMTP socket within 20 s")

    def count(self):
        n = 0
        for d in ("new", "cur"):
            try:
                n += len(os.listdir(os.path.join(self.maildir, d)))
            except OSError:
                pass
        return n

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            A.stop_proc(self.proc, "dovecot")
        if not isinstance(self.cg, A.ProcTree):
            A.kill_cgroup_leftovers(self.cg, "dovecot")
        self.cg.remove()
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------
# the runs

class Durable:
    def __init__(self, args):
        self.args = args
        ns = argparse.Namespace(
            sluiced=args.sluiced, workdir=args.workdir, cpu_accounting=None, quick=False,
            scale=1.0, sessions=20, warmup=args.warmup, repeat=1, timeout=300,
            server_cpu=args.server_cpu, client_cpu=args.client_cpu)
        self.rig = A.Rig(ns)
        self.accept_rows = []      # (server, sessions, Result, fsyncs dict or None, why)
        self.lat_rows = []         # (label, sync, background, [ms])
        self.lmtp = None
        self.failed = []
        self.versions = {}
        self.sluice_queue = os.path.join(os.path.dirname(args.sluiced), "sluice-queue")

    def with_server(self, cls, fn, *a):
        server = cls(self.rig, *a)
        server.cg = self.rig.cpu.new(server.name)
        log("starting %s" % server.label)
        try:
            server.start()
            self.versions[server.name] = server.version()
            fn(server)
        except A.BenchError as e:
            self.failed.append("%s: %s" % (server.name, e))
            log("FAILED %s: %s" % (server.name, e))
        finally:
            try:
                server.stop()
            except (A.BenchError, subprocess.TimeoutExpired) as e:
                self.failed.append("%s stop: %s" % (server.name, e))
            server.cg.remove()

    # ---- accept: rate, CPU, fsyncs

    def accept_runs(self, server):
        self.rig.args.sessions = 20
        self.rig.warmup(server)
        for sessions in self.args.sessions:
            n = int(round(self.args.count[server.name] * self.args.scale))
            wl = A.Workload("1k-conn-s%d" % sessions, "1 KB, one message per connection", n,
                            ["-s", "@S@", "-l", "1024"])
            self.rig.args.sessions = sessions
            outdir = os.path.join(server.dir, "wl-" + wl.name)
            os.makedirs(outdir, exist_ok=True)
            fc = FsyncCounter(server.cg, self.rig.cpu, outdir)
            fc.start()
            res = self.rig.measure(server, wl)
            fs = fc.stop()
            if not res.ok:
                raise A.BenchError("%d sessions: %s" % (sessions, res.error))
            self.accept_rows.append((server, sessions, res, fs, fc.why))
            log("  %-15s %3d sessions %5d msgs %6.0f msg/s  CPU %.3f ms/msg  fsyncs/msg %s" % (
                server.name, sessions, res.n, res.rate, res.cpu_ms_per_msg,
                "%.4f" % (sum(fs.values()) / res.n) if fs else "n/a (%s)" % fc.why))

    # ---- latency from "." to 250

    def latency_runs(self):
        """sync true and sync false servers side by side, the client
        alternating between them; idle, then with background sessions
        (10 smtp-source sessions against each server)."""
        servers = []
        try:
            for cls in (SluicedGroup, SluicedNoSync):
                server = cls(self.rig)
                server.cg = self.rig.cpu.new(server.name + "-lat")
                servers.append(server)
                log("starting %s" % server.label)
                server.start()
                self.versions[server.name] = server.version()
                self.rig.args.sessions = 20
                self.rig.warmup(server)
            ports = [str(x.port) for x in servers]
            for background in (False, True):
                bgs = []
                if background:
                    for x in servers:
                        argv = self.rig.client_argv(x.port, ["-s", "10", "-l", "1024"], 10 ** 7)
                        bgs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL))
                    time.sleep(0.5)
                try:
                    r = subprocess.run(["taskset", "-c", str(self.args.client_cpu), sys.executable,
                                        os.path.abspath(__file__), "--latency-client", ",".join(ports),
                                        str(self.args.lat_n)], capture_output=True, text=True, timeout=300)
                finally:
                    for bg in bgs:
                        bg.kill()
                        bg.wait()
                if r.returncode != 0:
                    raise A.BenchError("latency client: %s" % (r.stderr or r.stdout).strip()[-300:])
                got = json.loads(r.stdout)
                for x in servers:
                    lat = got[str(x.port)]
                    sync = x.name != "sluiced-nosync"
                    self.lat_rows.append((x.name, sync, background, lat))
                    log("  %-15s sync %-5s %s p50 %.3f ms p99 %.3f ms" % (
                        x.name, sync, "10+10 bg sessions" if background else "idle", pct(lat, 50), pct(lat, 99)))
                if background:
                    time.sleep(1.0)
        except A.BenchError as e:
            self.failed.append("latency: %s" % e)
            log("FAILED latency: %s" % e)
        finally:
            for x in servers:
                try:
                    x.stop()
                except (A.BenchError, subprocess.TimeoutExpired) as e:
                    self.failed.append("%s stop: %s" % (x.name, e))
                x.cg.remove()

    # ---- LMTP drain into Dovecot

    def lmtp_run(self):
        dv = Dovecot(self.rig.cpu)
        try:
            self.with_server(SluicedLmtp, lambda s: self._lmtp(s, dv), dv.sock)
        finally:
            dv.stop()

    def _lmtp(self, server, dv):
        n = int(round(self.args.lmtp_n * self.args.scale))
        log("  filling the spool with %d messages, LMTP backend down" % n)
        argv = self.rig.client_argv(server.port, ["-s", "20", "-l", "1024"], n)
        got, _ = self.rig.run_clients([(argv, n)], server.dir, 1)
        if got != n:
            raise A.BenchError("fill: %d of %d accepted" % (got, n))
        time.sleep(1.5)            # at least one failed attempt each: they are all deferred
        if dv.count() != 0:
            raise A.BenchError("Dovecot has mail before it started?")
        dv.start(self.args.client_cpu)
        u0, s0 = server.cg.read()
        du0, ds0 = dv.cg.read()
        t0 = time.monotonic()
        fl = subprocess.run([self.sluice_queue, "-c", server.conf, "flush"], capture_output=True,
                            text=True, timeout=30)
        if fl.returncode != 0:
            log("  sluice-queue flush: exit %d %s (the 1 s retry will do)" % (fl.returncode, fl.stderr.strip()))
        t_first = None
        deadline = time.monotonic() + 120 + n / 20.0
        while True:
            c = dv.count()
            now = time.monotonic()
            if c and t_first is None:
                t_first = now
            if c >= n:
                break
            if now > deadline:
                raise A.BenchError("drain: %d of %d delivered after %.0f s" % (c, n, now - t0))
            time.sleep(0.02)
        t1 = time.monotonic()
        # settle: sluiced's marks and segment removal, Dovecot's index work
        prev = sum(server.cg.read())
        for _ in range(25):
            time.sleep(0.2)
            cur = sum(server.cg.read())
            if cur - prev < 2000:
                break
            prev = cur
        u1, s1 = server.cg.read()
        du1, ds1 = dv.cg.read()
        if dv.count() != n:
            raise A.BenchError("Dovecot holds %d messages, want %d" % (dv.count(), n))
        self.lmtp = dict(n=n, wall=t1 - t0, first=(t_first - t0) if t_first else 0.0,
                         active=(t1 - t_first) if t_first else t1 - t0,
                         cpu_us=(u1 - u0) + (s1 - s0), user_us=u1 - u0, sys_us=s1 - s0,
                         dv_cpu_us=(du1 - du0) + (ds1 - ds0),
                         dovecot=subprocess.run([DOVECOT, "--version"], capture_output=True,
                                                text=True).stdout.strip())
        L = self.lmtp
        log("  LMTP drain: %d msgs in %.2f s (%.0f msg/s; first after %.2f s), sluiced CPU %.3f ms/msg, "
            "Dovecot CPU %.3f ms/msg" % (n, L["wall"], n / L["wall"], L["first"], L["cpu_us"] / 1000.0 / n,
                                         L["dv_cpu_us"] / 1000.0 / n))

    def run(self):
        t0 = time.monotonic()
        self.load_before = open("/proc/loadavg").read().split()[:3]
        parts = self.args.parts
        if "accept" in parts:
            for cls in (SluicedGroup, SluicedDelay, SluicedPerMsg, Postfix):
                self.with_server(cls, self.accept_runs)
        if "latency" in parts:
            self.latency_runs()
        if "lmtp" in parts:
            if not DOVECOT:
                self.failed.append("lmtp: no dovecot (apt-get install dovecot-core dovecot-lmtpd)")
            elif not os.access(self.sluice_queue, os.X_OK):
                self.failed.append("lmtp: no sluice-queue next to %s" % self.args.sluiced)
            else:
                self.lmtp_run()
        self.elapsed = time.monotonic() - t0
        self.load_after = open("/proc/loadavg").read().split()[:3]
        self.rig.cpu.close()

    # ---- report

    def report(self):
        m = self.rig.machine()
        out = []
        out.append("Command: `%s`" % " ".join(["/usr/bin/python3", "bench/durable.py"] + sys.argv[1:]))
        out.append("")
        out.append("- date: %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
        out.append("- machine: %d cores (`nproc`), %s, kernel %s" % (m["nproc"], m["cpu"], m["kernel"]))
        out.append("- disk (sluiced spool, Postfix queue, Dovecot mail): %s" % m["disk"])
        out.append("- pinning: servers on core %d, clients (smtp-source, latency client, Dovecot) on core %d"
                   % (self.args.server_cpu, self.args.client_cpu))
        out.append("- server CPU: %s; fsyncs: `perf stat -a -G <server cgroup> -e "
                   "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync` around each measured run"
                   % self.rig.cpu.kind)
        out.append("- load average before / after: %s / %s (shared machine)"
                   % (" ".join(self.load_before), " ".join(self.load_after)))
        for n, v in self.versions.items():
            out.append("- %s: %s" % (n, v))
        if self.rig.sluiced_info:
            out.append("- sluiced binary: %s" % self.rig.sluiced_info)
        out.append("- total run time: %.0f s" % self.elapsed)
        out.append("")
        if self.accept_rows:
            out.append("#### Durable accept — 1 KB, one message per connection (smtp-source)")
            out.append("")
            out.append("| server | sessions | messages | msg/s | server CPU ms/msg | durable accepts per CPU s "
                       "| vs Postfix (per CPU s) | fsyncs/msg (fdatasync + fsync) |")
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            pf = {s: r for srv, s, r, _, _ in self.accept_rows if srv.name == "postfix-queue"}
            for srv, sessions, r, fs, why in self.accept_rows:
                per_s = 1000.0 / r.cpu_ms_per_msg if r.cpu_ms_per_msg else 0
                ref = pf.get(sessions)
                ratio = "%.1f×" % (ref.cpu_ms_per_msg / r.cpu_ms_per_msg) if ref and r.cpu_ms_per_msg else "n/a"
                if fs:
                    fcell = "%.4f (%d + %d)" % (sum(fs.values()) / r.n, fs["fdatasync"], fs["fsync"])
                else:
                    fcell = "n/a (%s)" % why
                out.append("| %s | %d | %d | %.0f | %.3f | %.0f | %s | %s |" % (
                    srv.name, sessions, r.n, r.rate, r.cpu_ms_per_msg, per_s, ratio, fcell))
            out.append("")
        if self.lat_rows:
            out.append("#### Latency from the final \".\" to the 250 (ms; %d sequential transactions per server, "
                       "1 KB, one connection per server, TCP_NODELAY; both servers run at once on the server "
                       "core and the client alternates between them)" % self.args.lat_n)
            out.append("")
            out.append("| server | spool sync | other load | p50 | p90 | p99 | max | added by the commit, p50 / p99 |")
            out.append("|---|---|---|---:|---:|---:|---:|---:|")
            base = {bg: lat for _, sync, bg, lat in self.lat_rows if not sync}
            for name, sync, bg, lat in self.lat_rows:
                add = ""
                if sync and bg in base:
                    add = "%.3f / %.3f" % (pct(lat, 50) - pct(base[bg], 50), pct(lat, 99) - pct(base[bg], 99))
                out.append("| %s | %s | %s | %.3f | %.3f | %.3f | %.3f | %s |" % (
                    name, "true" if sync else "false", "10 smtp-source sessions on each server" if bg else "none",
                    pct(lat, 50), pct(lat, 90), pct(lat, 99), max(lat), add))
            out.append("")
        if self.lmtp:
            L = self.lmtp
            out.append("#### LMTP delivery into a private Dovecot (%s), spool filled while the backend was down"
                       % L["dovecot"])
            out.append("")
            out.append("| messages | drain s (from flush) | msg/s | first delivery after s | msg/s after the first "
                       "| sluiced CPU ms/msg (user / sys) | Dovecot CPU ms/msg |")
            out.append("|---:|---:|---:|---:|---:|---:|---:|")
            out.append("| %d | %.2f | %.0f | %.2f | %.0f | %.3f (%d%% / %d%%) | %.3f |" % (
                L["n"], L["wall"], L["n"] / L["wall"], L["first"], (L["n"] - 1) / L["active"] if L["active"] else 0,
                L["cpu_us"] / 1000.0 / L["n"], 100 * L["user_us"] / max(1, L["cpu_us"]),
                100 * L["sys_us"] / max(1, L["cpu_us"]), L["dv_cpu_us"] / 1000.0 / L["n"]))
            out.append("")
        out.append("#### Goals (issue 5)")
        out.append("")
        out.extend(self.goals())
        if self.failed:
            out.append("")
            out.append("**Failures:** " + "; ".join(self.failed))
        return "\n".join(out) + "\n"

    def goals(self):
        lines = []
        pf = {s: r for srv, s, r, _, _ in self.accept_rows if srv.name == "postfix-queue"}
        for srv, s, r, fs, _ in self.accept_rows:
            if srv.name != "sluiced-group":
                continue
            if s in pf and r.cpu_ms_per_msg:
                ratio = pf[s].cpu_ms_per_msg / r.cpu_ms_per_msg
                lines.append("- durable accepts per server CPU second vs Postfix, %d sessions: %.1f× "
                             "(goal ≥ %.0f×): %s" % (s, ratio, GOAL_RATIO, "met" if ratio >= GOAL_RATIO else "NOT met"))
            if fs:
                f = sum(fs.values()) / r.n
                lines.append("- fsyncs per message with group commit, %d sessions: %.4f (goal ≤ %.2f): %s"
                             % (s, f, GOAL_FSYNC, "met" if f <= GOAL_FSYNC else "NOT met"))
        base = {bg: lat for _, sync, bg, lat in self.lat_rows if not sync}
        for _, sync, bg, lat in self.lat_rows:
            if sync and bg in base:
                a50 = pct(lat, 50) - pct(base[bg], 50)
                a99 = pct(lat, 99) - pct(base[bg], 99)
                lines.append("- latency added to the 250 by the commit (%s): p50 %.3f ms, p99 %.3f ms "
                             "(goal ≤ %.0f ms): %s" % ("10 background sessions per server" if bg else "idle", a50, a99,
                                                       GOAL_LAT_MS, "met at p50" + (" and p99" if a99 <= GOAL_LAT_MS else ", NOT at p99")
                                                       if a50 <= GOAL_LAT_MS else "NOT met"))
        return lines


def write_results(text):
    path = os.path.join(BENCH_DIR, "RESULTS.md")
    with open(path) as f:
        old = f.read()
    if A.NOTES_MARK not in old:
        old = old.rstrip("\n") + "\n\n" + A.NOTES_MARK + "\n"
    section = (SECTION_START + "\n\n## Durability benchmark (bench/durable.py)\n\n"
               "Generated by `bench/durable.py --write-results`; it sits below accept.py's marker line, so "
               "accept.py keeps it, and durable.py rewrites only what is between its own two markers.\n\n"
               + text + "\n" + SECTION_END + "\n")
    if SECTION_START in old and SECTION_END in old:
        a = old.index(SECTION_START)
        b = old.index(SECTION_END) + len(SECTION_END)
        new = old[:a] + section.rstrip("\n") + old[b:]
    else:
        new = old.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(new)
    log("wrote %s" % path)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--latency-client":
        latency_client([int(p) for p in sys.argv[2].split(",")], int(sys.argv[3]), 1024)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluiced", required=True, help="the sluiced binary (sluice-queue must be next to it)")
    ap.add_argument("--parts", default="accept,latency,lmtp", help="comma list of accept,latency,lmtp")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    ap.add_argument("--sessions", default="20,100", help="parallel sessions for the accept runs (default 20,100)")
    ap.add_argument("--lat-n", type=int, default=1000, help="sequential transactions per latency run")
    ap.add_argument("--lmtp-n", type=int, default=3000, help="messages for the LMTP drain")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured messages per server first")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--workdir", default=os.path.join(BENCH_DIR, ".work"))
    ap.add_argument("--keep", action="store_true", help="keep the run directory (kept anyway on failure)")
    ap.add_argument("--write-results", action="store_true",
                    help="put the report into bench/RESULTS.md (its own section, below accept.py's marker)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (private Postfix and Dovecot, cgroups, perf)")
    args.sluiced = os.path.abspath(args.sluiced)
    if not os.access(args.sluiced, os.X_OK):
        raise SystemExit("--sluiced %s: no such executable" % args.sluiced)
    args.parts = set(args.parts.split(","))
    args.sessions = [int(x) for x in args.sessions.split(",")]
    # messages per accept run (each a few seconds here)
    args.count = {"sluiced-group": 4000, "sluiced-delay1ms": 4000, "sluiced-batch1": 1500,
                  "postfix-queue": 1500}
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    d = Durable(args)
    try:
        d.run()
    except KeyboardInterrupt:
        d.failed.append("interrupted")
        d.elapsed = 0
        d.load_after = ["?"]
        d.rig.cpu.close()
    text = d.report()
    print(text)
    if args.write_results:
        write_results(text)
    if d.failed:
        log("FAILURES: %s; run directory kept at %s" % ("; ".join(d.failed), d.rig.workdir))
        sys.exit(1)
    if not args.keep:
        shutil.rmtree(d.rig.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
