#!/usr/bin/python3
"""Side-by-side SMTP acceptance benchmark: sluiced (kernel transport) against
Postfix (with and without its queue), Haraka and smtp-sink.

Every server runs pinned to one core (default 0), Postfix's smtp-source drives
it from another core (default 1), over loopback only, for a bounded number of
messages. For each server and workload the rig reports messages/s (wall),
server CPU per message (user+sys of the server's whole process tree, children
included, read from a cgroup) and the ratio to sluiced.

Run `/usr/bin/python3 bench/accept.py --help`; bench/README.md explains it.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PEERS_DIR = os.path.join(BENCH_DIR, "peers")
REPO_DIR = os.path.dirname(BENCH_DIR)
CACHE_DIR = os.path.join(BENCH_DIR, ".cache")
HARAKA_PKG = os.path.join(CACHE_DIR, "haraka")
HARAKA_BIN = os.path.join(HARAKA_PKG, "node_modules", "Haraka", "bin", "haraka")
CORPUS_GEN = "/work/shared/corpus/make_corpus.py"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
DEFAULT_SLUICED = os.path.join(REPO_DIR, "build-lead", "control", "sluiced")

RCPT_DOMAIN = "bench.test"
SENDER = "sender@client.test"
RCPT = "rcpt@" + RCPT_DOMAIN
HELO = "client.test"

# Reference figures for this kind of machine (server CPU ms per 1 KB message,
# one message per connection), given with the task; printed for comparison.
REFERENCE_MS = {
    "postfix-queue": 3.1,
    "postfix-proxy": 0.70,
    "haraka": 0.91,
    "smtp-sink": 0.08,
}
SLUICE_GOAL_MS = 0.15
# --write-results rewrites bench/RESULTS.md up to this line and keeps the rest
NOTES_MARK = "<!-- accept.py keeps everything below this line when it rewrites the file -->"


def log(msg):
    sys.stderr.write("[accept %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# CPU accounting: a cgroup per server (v2 cpu.stat, else v1 cpuacct), else a
# walk of the /proc process tree.

class CgroupV2:
    kind = "cgroup v2 (cpu.stat usage_usec / user_usec / system_usec)"

    def __init__(self, root, name):
        self.path = os.path.join(root, name)
        os.mkdir(self.path)

    def procs_file(self):
        return os.path.join(self.path, "cgroup.procs")

    def read(self):
        vals = {}
        with open(os.path.join(self.path, "cpu.stat")) as f:
            for line in f:
                k, v = line.split()
                vals[k] = int(v)
        return vals["user_usec"], vals["system_usec"]

    def pids(self):
        with open(self.procs_file()) as f:
            return [int(x) for x in f.read().split()]

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


class CgroupV1(CgroupV2):
    kind = "cgroup v1 cpuacct (cpuacct.usage_user / cpuacct.usage_sys)"

    def read(self):
        def rd(n):
            with open(os.path.join(self.path, n)) as f:
                return int(f.read().strip())
        return rd("cpuacct.usage_user") // 1000, rd("cpuacct.usage_sys") // 1000


class ProcTree:
    """Fallback: utime+stime+cutime+cstime summed over the live process tree
    under the server's root processes (children that exited and were reaped
    are in their parent's cutime/cstime)."""
    kind = "/proc/<pid>/stat utime+stime+cutime+cstime of the server's process tree"

    def __init__(self):
        self.roots = []
        self.tick = os.sysconf("SC_CLK_TCK")

    def procs_file(self):
        return None

    @staticmethod
    def _stat(pid):
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        rest = s[s.rindex(")") + 2:].split()
        # rest[0] is state (field 3); ppid field 4; utime 14 ... cstime 17
        return int(rest[1]), [int(x) for x in rest[11:15]]

    def pids(self):
        table = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    table[int(d)] = self._stat(int(d))[0]
                except (OSError, ValueError, IndexError):
                    pass
        out, todo = [], [p for p in self.roots if p in table]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(c for c, pp in table.items() if pp == p)
        return out

    def read(self):
        u = s = 0
        for p in self.pids():
            try:
                _, t = self._stat(p)
            except (OSError, ValueError, IndexError):
                continue
            u += t[0] + t[2]
            s += t[1] + t[3]
        k = 1000000 // self.tick
        return u * k, s * k

    def remove(self):
        pass


class CpuAccounting:
    def __init__(self, force=None):
        self.base = None
        self.cls = None
        tag = "sluice-bench-%d" % os.getpid()
        cands = []
        if force in (None, "v2"):
            for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                if os.path.exists(os.path.join(root, "cgroup.procs")) and \
                        os.path.exists(os.path.join(root, "cgroup.subtree_control")):
                    cands.append((CgroupV2, root))
                    break
        if force in (None, "v1") and os.path.exists("/sys/fs/cgroup/cpuacct/cpuacct.usage_user"):
            cands.append((CgroupV1, "/sys/fs/cgroup/cpuacct"))
        for cls, root in cands:
            try:
                base = os.path.join(root, tag)
                os.mkdir(base)
                probe = cls(base, "probe")
                probe.read()
                probe.remove()
                self.base, self.cls = base, cls
                break
            except OSError as e:
                log("cgroup %s not usable: %s" % (root, e))
                try:
                    os.rmdir(os.path.join(root, tag))
                except OSError:
                    pass
        self.kind = self.cls.kind if self.cls else ProcTree.kind

    def new(self, name):
        if self.cls:
            return self.cls(self.base, name)
        return ProcTree()

    def close(self):
        if self.base:
            try:
                os.rmdir(self.base)
            except OSError:
                pass


# --------------------------------------------------------------------------
# helpers

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_banner(port, timeout, proc=None):
    """Wait until the server on port says 220 (then QUIT politely)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError("server exited with status %s before listening" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                # a multi-line banner ends with "220 "
                while data.startswith(b"220-") and b"\n220 " not in data:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    try:
                        s.recv(512)
                    except OSError:
                        pass
                    return
                last = data[:80]
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise BenchError("no 220 banner on port %d within %ds (last: %r)" % (port, timeout, last))


def in_cgroup_preexec(cg):
    pf = cg.procs_file()

    def fn():
        os.setsid()
        if pf:
            with open(pf, "w") as f:
                f.write(str(os.getpid()))
    return fn


def fill(template_path, out_path, subs):
    with open(template_path) as f:
        text = f.read()
    for k, v in subs.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError("%s: unfilled %s" % (template_path, left))
    with open(out_path, "w") as f:
        f.write(text)


def last_counter(path, pattern=r"(\d+)"):
    """Last value of a \\r-separated running counter (smtp-source -c / smtp-sink -c)."""
    try:
        with open(path, "rb") as f:
            data = f.read().decode("latin-1")
    except OSError:
        return 0
    vals = re.findall(pattern, data.replace("\n", "\r"))
    return int(vals[-1]) if vals else 0


def stop_proc(proc, name, timeout=15):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log("%s did not stop on SIGTERM within %ds: SIGKILL" % (name, timeout))
        proc.kill()
        proc.wait(10)


def kill_cgroup_leftovers(cg, name):
    """Processes we started that are still in the server's cgroup."""
    deadline = time.time() + 15
    while time.time() < deadline:
        pids = [p for p in cg.pids() if p != os.getpid()]
        if not pids:
            return
        time.sleep(0.2)
    for p in pids:
        log("%s: leftover pid %d, SIGKILL" % (name, p))
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.5)


# --------------------------------------------------------------------------
# servers

class Server:
    name = "?"
    label = "?"
    factor = 1          # message count multiplier: fast servers get more work
    settles = False     # does work go on after the client is done (queue, delivery)?

    def __init__(self, rig):
        self.rig = rig
        self.dir = os.path.join(rig.workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.cg = None
        self.port = None
        self.procs = []

    def start(self):
        raise NotImplementedError

    def popen(self, argv, logname, env=None):
        """Start a server process pinned to the server core, in its cgroup."""
        out = open(os.path.join(self.dir, logname), "wb")
        argv = ["taskset", "-c", str(self.rig.args.server_cpu)] + argv
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=in_cgroup_preexec(self.cg), env=env, cwd=self.dir)
        out.close()
        self.procs.append((p, argv[3] if len(argv) > 3 else argv[-1]))
        if isinstance(self.cg, ProcTree):
            self.cg.roots.append(p.pid)
        return p

    def delivered(self):
        """Messages the server has verifiably taken (None: only the client can tell)."""
        return None

    def check_clean(self):
        """Raise if the server logged failures."""

    def stop(self):
        for p, n in reversed(self.procs):
            stop_proc(p, n)
        if self.cg is not None and not isinstance(self.cg, ProcTree):
            kill_cgroup_leftovers(self.cg, self.name)

    def version(self):
        return ""


class SmtpSink(Server):
    name = "smtp-sink"
    label = "smtp-sink (stores nothing, the floor)"
    factor = 4

    def start_sink(self, port, logname="smtp-sink.out"):
        self.sink_out = os.path.join(self.dir, logname)
        return self.popen([SMTP_SINK, "-u", "postfix", "-c", "127.0.0.1:%d" % port, "1000"], logname)

    def start(self):
        self.port = free_port()
        p = self.start_sink(self.port)
        wait_banner(self.port, 20, p)

    def delivered(self):
        return last_counter(self.sink_out, r"mesg=(\d+)")

    def version(self):
        return "Postfix " + postfix_version()


def postfix_version():
    try:
        out = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
        return out or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


class PostfixQueue(Server):
    name = "postfix-queue"
    label = "Postfix smtpd + queue (discard transport)"
    factor = 1
    settles = True
    smtpd_opts = ""

    def start(self):
        self.port = free_port()
        etc = os.path.join(self.dir, "etc")
        for d in ("etc", "queue", "data"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        self.etc = etc
        self.maillog = os.path.join(self.dir, "maillog")
        self.start_extra()
        subs = {"DIR": self.dir, "PORT": self.port, "SMTPD_OPTS": self.smtpd_opts}
        fill(os.path.join(PEERS_DIR, "postfix", "main.cf.in"), os.path.join(etc, "main.cf"), subs)
        fill(os.path.join(PEERS_DIR, "postfix", "master.cf.in"), os.path.join(etc, "master.cf"), subs)
        p = self.popen([POSTFIX, "-c", etc, "start"], "postfix-start.out")
        rc = p.wait(120)
        self.procs.remove((p, POSTFIX))
        if rc != 0:
            raise BenchError("postfix -c %s start: exit %d (see %s)" % (etc, rc, os.path.join(self.dir, "postfix-start.out")))
        self.started = True
        pidfile = os.path.join(self.dir, "queue", "pid", "master.pid")
        for _ in range(50):
            if os.path.exists(pidfile):
                break
            time.sleep(0.1)
        if isinstance(self.cg, ProcTree):
            with open(pidfile) as f:
                self.cg.roots.append(int(f.read().strip()))
        wait_banner(self.port, 30)

    def start_extra(self):
        pass

    def _log(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def delivered(self):
        # one "removed" line per message once the discard agent took every recipient
        return len(re.findall(r"qmgr\[\d+\]: \w+: removed", self._log()))

    def queue_files(self):
        n = 0
        for d in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.dir, "queue", d)):
                n += len(files)
        return n

    def check_clean(self):
        text = self._log()
        bad = re.findall(r".*(?:status=(?:deferred|bounced)|fatal:|panic:|reject:).*", text)
        if bad:
            raise BenchError("Postfix log %s has failures, e.g.: %s" % (self.maillog, bad[0]))
        if self.queue_files():
            raise BenchError("Postfix queue not empty: %d files" % self.queue_files())

    def stop(self):
        if getattr(self, "started", False):
            subprocess.run([POSTFIX, "-c", self.etc, "stop"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
            self.started = False
        Server.stop(self)

    def version(self):
        return "Postfix " + postfix_version()


class PostfixProxy(PostfixQueue, SmtpSink):
    name = "postfix-proxy"
    label = "Postfix smtpd, no queue (before-queue proxy to smtp-sink)"
    factor = 2
    settles = False

    def start_extra(self):
        self.sink_port = free_port()
        p = self.start_sink(self.sink_port)
        wait_banner(self.sink_port, 20, p)
        self.smtpd_opts = "-o smtpd_proxy_filter=127.0.0.1:%d -o smtpd_proxy_timeout=60s" % self.sink_port

    def delivered(self):
        # smtpd logs proxy-accept only after the sink said 250 to end of data
        accepted = len(re.findall(r"smtpd\[\d+\]: proxy-accept: END-OF-MESSAGE: 250", self._log()))
        return min(SmtpSink.delivered(self), accepted)

    def check_clean(self):
        text = self._log()
        bad = re.findall(r".*(?:proxy-reject|fatal:|panic:|reject:|warning: .*proxy).*", text)
        if bad:
            raise BenchError("Postfix log %s has failures, e.g.: %s" % (self.maillog, bad[0]))


class Haraka(Server):
    name = "haraka"
    label = "Haraka (queue/discard, one process)"
    factor = 2

    def start(self):
        if not os.path.exists(HARAKA_BIN):
            raise BenchError("Haraka is not installed at %s (run bench/accept.py --install-haraka, "
                             "or see bench/README.md)" % HARAKA_BIN)
        self.port = free_port()
        cfg = os.path.join(self.dir, "config")
        if os.path.exists(cfg):
            shutil.rmtree(cfg)
        # Haraka's own defaults for everything we do not set
        shutil.copytree(os.path.join(os.path.dirname(os.path.dirname(HARAKA_BIN)), "config"), cfg)
        src = os.path.join(PEERS_DIR, "haraka")
        fill(os.path.join(src, "smtp.ini.in"), os.path.join(cfg, "smtp.ini"), {"PORT": self.port})
        for f in ("plugins", "host_list", "log.ini", "me"):
            shutil.copy(os.path.join(src, f), os.path.join(cfg, f))
        os.makedirs(os.path.join(self.dir, "plugins"), exist_ok=True)
        shutil.copy(os.path.join(src, "bench_no_rdns.js"), os.path.join(self.dir, "plugins"))
        env = dict(os.environ, YES_REALLY_DO_DISCARD="1", NODE_ENV="production")
        p = self.popen(["node", HARAKA_BIN, "-c", self.dir], "haraka.out", env=env)
        wait_banner(self.port, 90, p)

    def version(self):
        try:
            with open(os.path.join(os.path.dirname(os.path.dirname(HARAKA_BIN)), "package.json")) as f:
                v = json.load(f)["version"]
            node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
            return "Haraka %s, node %s" % (v, node)
        except (OSError, ValueError, KeyError):
            return "?"


class Sluiced(Server):
    name = "sluiced-discard"
    label = "sluiced kernel transport, spool sync, discard"
    factor = 4
    settles = True
    template = "sluiced-discard.yaml.in"

    def start(self):
        self.port = free_port()
        os.makedirs(os.path.join(self.dir, "spool"), exist_ok=True)
        self.conf = os.path.join(self.dir, "sluiced.yaml")
        fill(os.path.join(PEERS_DIR, "sluiced", self.template), self.conf,
             {"DIR": self.dir, "PORT": self.port})
        chk = subprocess.run([self.rig.sluiced, "-c", self.conf, "--check"], capture_output=True,
                             text=True, timeout=60)
        if chk.returncode != 0:
            raise BenchError("sluiced -c %s --check: exit %d: %s" % (
                self.conf, chk.returncode, (chk.stderr or chk.stdout).strip()[:500]))
        p = self.popen([self.rig.sluiced, "-c", self.conf], "sluiced.out")
        wait_banner(self.port, 30, p)

    def stop(self):
        Server.stop(self)
        for p, n in self.procs:
            if p.returncode not in (0, -signal.SIGTERM):
                raise BenchError("sluiced exited with status %s on SIGTERM (see %s)" % (
                    p.returncode, os.path.join(self.dir, "sluiced.out")))

    def check_clean(self):
        for p, n in self.procs:
            if p.poll() is not None:
                raise BenchError("sluiced died (status %s)" % p.returncode)

    def version(self):
        try:
            r = subprocess.run([self.rig.sluiced, "--version"], capture_output=True, text=True, timeout=10)
            v = (r.stdout or r.stderr).strip().splitlines()
            return v[0] if r.returncode == 0 and v else os.path.basename(self.rig.sluiced)
        except (OSError, subprocess.TimeoutExpired):
            return "?"


class SluicedMaildir(Sluiced):
    name = "sluiced-maildir"
    label = "sluiced kernel transport, spool sync, maildir delivery"
    factor = 2
    template = "sluiced-maildir.yaml.in"

    def delivered(self):
        n = 0
        for root, dirs, files in os.walk(os.path.join(self.dir, "maildir")):
            if os.path.basename(root) in ("new", "cur"):
                n += len(files)
        return n


SERVERS = [Sluiced, SluicedMaildir, PostfixQueue, PostfixProxy, Haraka, SmtpSink]
SERVER_NAMES = [s.name for s in SERVERS]


# --------------------------------------------------------------------------
# workloads

class Workload:
    def __init__(self, name, label, base, args=(), corpus=False):
        self.name, self.label, self.base, self.args, self.corpus = name, label, base, list(args), corpus


WORKLOADS = [
    Workload("1k-conn", "1 KB body, 1 message per connection", 4000,
             ["-s", "@S@", "-l", "1024"]),
    Workload("1k-reuse", "1 KB body, messages back to back on persistent connections (-d)", 4000,
             ["-s", "@S@", "-d", "-l", "1024"]),
    Workload("100k", "100 KB body, 1 message per connection", 800,
             ["-s", "@S@", "-l", "102400"]),
    Workload("corpus", "shared corpus (make_corpus.py, 200 msgs, avg ~25 KB), 1 message per connection, "
             "one smtp-source per file", 2, corpus=True),
]
WORKLOAD_NAMES = [w.name for w in WORKLOADS]


class Result:
    def __init__(self, server, wl):
        self.server, self.wl = server, wl
        self.n = 0
        self.wall = 0.0
        self.cpu_user_us = self.cpu_sys_us = 0
        self.client_cpu = 0.0
        self.settle = 0.0
        self.error = None

    @property
    def ok(self):
        return self.error is None

    @property
    def cpu_ms_per_msg(self):
        return (self.cpu_user_us + self.cpu_sys_us) / 1000.0 / self.n if self.n else 0.0

    @property
    def rate(self):
        return self.n / self.wall if self.wall else 0.0


class Rig:
    def __init__(self, args):
        self.args = args
        self.results = []
        self.skipped = {}
        self.failed = False
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.workdir = os.path.abspath(os.path.join(args.workdir, "run-" + stamp))
        os.makedirs(self.workdir)
        # run a copy, so that a rebuild during the run cannot mix two binaries
        self.sluiced = self.sluiced_info = None
        if args.sluiced:
            st = os.stat(args.sluiced)
            with open(args.sluiced, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
            self.sluiced = os.path.join(self.workdir, "sluiced")
            shutil.copy2(args.sluiced, self.sluiced)
            self.sluiced_info = "%s (copied at start: %d bytes, modified %s, sha256 %s…)" % (
                args.sluiced, st.st_size, time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime)), digest)
        self.cpu = CpuAccounting(args.cpu_accounting)
        self.corpus_files = []
        self.versions = {}

    # ---- client

    def client_argv(self, port, wl_args, n, extra=()):
        return (["taskset", "-c", str(self.args.client_cpu), SMTP_SOURCE, "-c", "-m", str(n),
                 "-M", HELO, "-f", SENDER, "-t", RCPT] + list(wl_args) + list(extra) +
                ["127.0.0.1:%d" % port])

    def run_clients(self, jobs, outdir, concurrency):
        """Run smtp-source processes (argv, expected count), at most `concurrency`
        at a time; returns (messages counted, client CPU s). Raises on any failure."""
        pending = list(enumerate(jobs))
        running = {}
        try:
            return self._run_clients(pending, running, outdir, concurrency)
        except BaseException:
            for q, *_ in running.values():
                q.kill()
                q.wait()
            raise

    def _run_clients(self, pending, running, outdir, concurrency):
        total = 0
        cpu = 0.0
        deadline = time.time() + self.args.timeout
        errors = []
        while pending or running:
            while pending and len(running) < concurrency:
                i, (argv, n) = pending.pop(0)
                outp = os.path.join(outdir, "client-%d.out" % i)
                with open(outp, "wb") as out:
                    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
                running[p.pid] = (p, outp, n, argv)
            # reap only our clients: a server that dies must stay visible to its Popen
            done = None
            for cpid in list(running):
                pid, status, ru = os.wait4(cpid, os.WNOHANG)
                if pid:
                    done = (pid, status, ru)
                    break
            if done is None:
                if time.time() > deadline:
                    for q, *_ in running.values():
                        q.kill()
                    deadline = float("inf")
                    errors.append("client timeout (%ds)" % self.args.timeout)
                time.sleep(0.005)
                continue
            pid, status, ru = done
            p, outp, n, argv = running.pop(pid)
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu += ru.ru_utime + ru.ru_stime
            got = last_counter(outp)
            total += got
            if p.returncode != 0 or got != n:
                with open(outp, "rb") as f:
                    # the last words that are not the running counter
                    tail = " ".join(w for w in f.read().decode("latin-1").replace("\r", " ").split()
                                    if not w.isdigit())[-300:]
                errors.append("smtp-source exit %s, %d of %d messages: %s" % (p.returncode, got, n, tail.strip()))
            if time.time() > deadline:
                for q, *_ in running.values():
                    q.kill()
                errors.append("client timeout (%ds)" % self.args.timeout)
                deadline = float("inf")
        if errors:
            raise BenchError("; ".join(errors[:3]) + (" (+%d more)" % (len(errors) - 3) if len(errors) > 3 else ""))
        return total, cpu

    def corpus(self):
        if self.corpus_files:
            return self.corpus_files
        cdir = os.path.join(CACHE_DIR, "corpus")
        msgs = os.path.join(cdir, "msgs")
        if not os.path.isdir(msgs) or len(os.listdir(msgs)) < 200:
            log("generating the shared corpus into %s" % msgs)
            os.makedirs(cdir, exist_ok=True)
            r = subprocess.run(["/usr/bin/python3", CORPUS_GEN, msgs], capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise BenchError("make_corpus.py failed: %s" % r.stderr.strip()[-300:])
            log(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "corpus done")
        # smtp-source -F reads lines and appends CRLF to each: give it LF-only
        # copies (a CRLF file would go out as CR CR LF). Same bytes on the wire.
        prep = os.path.join(cdir, "lf")
        os.makedirs(prep, exist_ok=True)
        names = sorted(os.listdir(msgs))
        if self.args.quick:
            names = names[:40]
        files = []
        for name in names:
            with open(os.path.join(msgs, name), "rb") as fh:
                data = fh.read().replace(b"\r\n", b"\n")
            if b"\r" in data:
                raise BenchError("corpus file %s has a bare CR; smtp-source -F cannot send it as is" % name)
            out = os.path.join(prep, name)
            with open(out, "wb") as fh:
                fh.write(data)
            files.append(out)
        self.corpus_files = files
        return files

    # ---- one measurement

    def count(self, wl, server):
        scale = self.args.scale * (0.05 if self.args.quick else 1.0)
        if wl.corpus:
            return max(1, int(round(wl.base * server.factor * scale)))
        return max(20, int(round(wl.base * server.factor * scale)))

    def measure(self, server, wl):
        res = Result(server, wl)
        outdir = os.path.join(server.dir, "wl-" + wl.name)
        os.makedirs(outdir, exist_ok=True)
        if wl.corpus:
            files = self.corpus()
            per_file = self.count(wl, server)
            jobs = [(self.client_argv(server.port, ["-s", "1", "-F", f], per_file), per_file) for f in files]
            concurrency = self.args.sessions
        else:
            n = self.count(wl, server)
            wargs = [str(self.args.sessions) if a == "@S@" else a for a in wl.args]
            jobs = [(self.client_argv(server.port, wargs, n), n)]
            concurrency = 1
        expected = sum(n for _, n in jobs)
        before_deliv = server.delivered()
        log("  %-16s %-9s %6d messages ..." % (server.name, wl.name, expected))
        u0, s0 = server.cg.read()
        t0 = time.monotonic()
        try:
            got, ccpu = self.run_clients(jobs, outdir, concurrency)
        except BenchError as e:
            res.error = str(e)
            return res
        res.wall = time.monotonic() - t0
        res.n = got
        res.client_cpu = ccpu
        # the server has to finish what it took (queue, delivery) inside the window
        t1 = time.monotonic()
        if before_deliv is not None:
            deadline = time.monotonic() + 60 + expected / 50.0
            while True:
                d = server.delivered() - before_deliv
                if d >= expected:
                    break
                if time.monotonic() > deadline:
                    res.error = "server took %d messages but only %d were delivered/counted" % (expected, d)
                    return res
                time.sleep(0.1)
            if d != expected:
                res.error = "server counted %d messages, client sent %d" % (d, expected)
                return res
        # then wait until its CPU use settles (queue managers, group commits)
        if server.settles:
            last = sum(server.cg.read())
            quiet = 0
            settle_deadline = time.monotonic() + 10
            while time.monotonic() < settle_deadline and quiet < 2:
                time.sleep(0.2)
                now = sum(server.cg.read())
                quiet = quiet + 1 if now - last < 2000 else 0
                last = now
        res.settle = time.monotonic() - t1
        u1, s1 = server.cg.read()
        res.cpu_user_us, res.cpu_sys_us = u1 - u0, s1 - s0
        try:
            server.check_clean()
        except BenchError as e:
            res.error = str(e)
        return res

    def warmup(self, server):
        """Unmeasured messages first: JIT (Haraka), process pools (Postfix), caches."""
        n = self.args.warmup if self.args.warmup is not None else (40 if self.args.quick else 300)
        if n <= 0:
            return
        log("  %-16s warm-up   %6d messages" % (server.name, n))
        before = server.delivered()
        self.run_clients([(self.client_argv(server.port, ["-s", str(self.args.sessions), "-l", "1024"], n), n)],
                         server.dir, 1)
        if before is not None:
            deadline = time.monotonic() + 60
            while server.delivered() - before < n:
                if time.monotonic() > deadline:
                    raise BenchError("warm-up: server counted %d of %d messages" % (server.delivered() - before, n))
                time.sleep(0.1)

    # ---- main loop

    def selected_servers(self):
        names = self.args.servers.split(",") if self.args.servers else SERVER_NAMES
        out = []
        for name in names:
            if name not in SERVER_NAMES:
                raise SystemExit("unknown server %r (have: %s)" % (name, ", ".join(SERVER_NAMES)))
            cls = SERVERS[SERVER_NAMES.index(name)]
            if cls in (Sluiced, SluicedMaildir) and not self.sluiced:
                why = "no sluiced binary (give --sluiced PATH)"
                if os.access(DEFAULT_SLUICED, os.X_OK):
                    why += "; one exists at %s" % DEFAULT_SLUICED
                self.skipped[name] = why
                continue
            out.append(cls)
        return out

    def selected_workloads(self):
        names = self.args.workloads.split(",") if self.args.workloads else WORKLOAD_NAMES
        for n in names:
            if n not in WORKLOAD_NAMES:
                raise SystemExit("unknown workload %r (have: %s)" % (n, ", ".join(WORKLOAD_NAMES)))
        return [w for w in WORKLOADS if w.name in names]

    def run(self):
        servers = self.selected_servers()
        workloads = self.selected_workloads()
        for name, why in self.skipped.items():
            log("SKIP %s: %s" % (name, why))
        log("work dir %s; CPU accounting: %s" % (self.workdir, self.cpu.kind))
        log("servers on core %d, smtp-source on core %d" % (self.args.server_cpu, self.args.client_cpu))
        self.load_before = open("/proc/loadavg").read().split()[:3]
        t_start = time.monotonic()
        for cls in servers:
            server = cls(self)
            server.cg = self.cpu.new(server.name)
            log("starting %s" % server.label)
            try:
                server.start()
                self.versions[server.name] = server.version()
                log("%s listening on 127.0.0.1:%d" % (server.name, server.port))
                self.warmup(server)
                for wl in workloads:
                  for _ in range(self.args.repeat):
                    dead = [(n, p.returncode) for p, n in server.procs if p.poll() is not None]
                    if dead:
                        raise BenchError("%s exited (status %s) during the run" % dead[0])
                    res = self.measure(server, wl)
                    self.results.append(res)
                    if res.ok:
                        log("  %-16s %-9s %6d msgs %7.2f s %8.0f msg/s  server CPU %.3f ms/msg  client core %3.0f%%"
                            % (server.name, wl.name, res.n, res.wall, res.rate, res.cpu_ms_per_msg,
                               100.0 * res.client_cpu / res.wall if res.wall else 0))
                    else:
                        self.failed = True
                        log("  FAILED %s %s: %s" % (server.name, wl.name, res.error))
                        break
            except BenchError as e:
                self.failed = True
                log("FAILED %s: %s" % (server.name, e))
                for wl in workloads:
                    if not any(r.server is server and r.wl is wl for r in self.results):
                        r = Result(server, wl)
                        r.error = str(e)
                        self.results.append(r)
            finally:
                try:
                    server.stop()
                except (BenchError, subprocess.TimeoutExpired) as e:
                    self.failed = True
                    log("FAILED stopping %s: %s" % (server.name, e))
                    for r in self.results:
                        if r.server is server and r.ok:
                            r.error = "on stop: %s" % e
                server.cg.remove()
        self.elapsed = time.monotonic() - t_start
        self.load_after = open("/proc/loadavg").read().split()[:3]
        self.cpu.close()

    # ---- report

    def machine(self):
        model = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        try:
            df = subprocess.run(["df", "-hT", self.workdir], capture_output=True, text=True).stdout.splitlines()[-1].split()
            dev = df[0]
            disk = "%s (%s, %s)" % (dev, df[1], df[2])
            base = os.path.basename(dev)
            rot = "/sys/block/%s/queue/rotational" % base
            model_p = "/sys/block/%s/device/model" % base
            if os.path.exists(model_p):
                disk += ", model " + open(model_p).read().strip()
            if base.startswith("vd"):
                disk += ", virtio block device"
            elif os.path.exists(rot):
                disk += ", rotational=" + open(rot).read().strip()
        except (OSError, IndexError):
            disk = "?"
        return {
            "nproc": os.cpu_count(),
            "cpu": model,
            "kernel": platform.release(),
            "disk": disk,
        }

    def pick(self, name, wl):
        """(the run with the median CPU per message, all runs) for one server and
        workload; a failed run, if any, is the one returned."""
        runs = [r for r in self.results if r.server.name == name and r.wl is wl]
        if not runs:
            return None, []
        bad = [r for r in runs if not r.ok]
        if bad:
            return bad[0], runs
        srt = sorted(runs, key=lambda r: r.cpu_ms_per_msg)
        return srt[(len(srt) - 1) // 2], runs

    def tables(self):
        lines = []
        names = []
        for r in self.results:
            if r.server.name not in names:
                names.append(r.server.name)
        wls = self.selected_workloads()
        sl = {}
        for w in wls:
            r, _ = self.pick("sluiced-discard", w)
            if r is not None and r.ok and r.cpu_ms_per_msg:
                sl[w.name] = r
        rep = self.args.repeat
        for wl in wls:
            if not any(r.wl is wl for r in self.results):
                continue
            lines.append("### %s — %s" % (wl.name, wl.label))
            lines.append("")
            rng = " | CPU ms/msg over %d runs" % rep if rep > 1 else ""
            lines.append("| server | messages | wall s | msg/s | drain s | server CPU ms/msg | user / sys%s | client core | CPU/msg vs sluiced |" % rng)
            lines.append("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if rep > 1 else "") + "---:|---:|")
            for n in names:
                r, runs = self.pick(n, wl)
                if r is None:
                    continue
                if not r.ok:
                    empties = 6 + (1 if rep > 1 else 0)
                    lines.append("| %s | **FAILED** |%s %s |" % (n, " |" * empties,
                                 r.error.replace("|", "/").replace("\n", " ")[:300]))
                    continue
                tot = r.cpu_user_us + r.cpu_sys_us
                us = "%d%% / %d%%" % (100 * r.cpu_user_us / tot, 100 * r.cpu_sys_us / tot) if tot else "-"
                ccore = 100.0 * r.client_cpu / r.wall if r.wall else 0
                ref = sl.get(wl.name)
                ratio = "%.1f×" % (r.cpu_ms_per_msg / ref.cpu_ms_per_msg) if ref else "n/a"
                spread = ""
                if rep > 1:
                    v = sorted(x.cpu_ms_per_msg for x in runs)
                    spread = " | %.3f–%.3f" % (v[0], v[-1])
                lines.append("| %s | %d | %.2f | %.0f | %.1f | %.3f | %s%s | %.0f%%%s | %s |" % (
                    n, r.n, r.wall, r.rate, r.settle, r.cpu_ms_per_msg, us, spread, ccore,
                    " (bound)" if ccore >= 85 else "", ratio))
            lines.append("")
        if names:
            lines.append("### Summary — server CPU ms per message (× = ratio to sluiced-discard)")
            lines.append("")
            lines.append("| server | " + " | ".join(w.name for w in wls) + " | reference, 1k-conn |")
            lines.append("|---|" + "---:|" * (len(wls) + 1))
            for n in names:
                cells = []
                for w in wls:
                    r, _ = self.pick(n, w)
                    if r is None:
                        cells.append("")
                    elif not r.ok:
                        cells.append("FAILED")
                    else:
                        ref = sl.get(w.name)
                        c = "%.3f" % r.cpu_ms_per_msg
                        if ref and n != "sluiced-discard":
                            c += " (%.1f×)" % (r.cpu_ms_per_msg / ref.cpu_ms_per_msg)
                        cells.append(c)
                refv = REFERENCE_MS.get(n)
                if n.startswith("sluiced"):
                    reft = "goal ≤ %.2f" % SLUICE_GOAL_MS
                else:
                    reft = "%.2f" % refv if refv else ""
                lines.append("| %s | %s | %s |" % (n, " | ".join(cells), reft))
            lines.append("")
        for name, why in self.skipped.items():
            lines.append("- %s: not run — %s." % (name, why))
        if self.skipped:
            lines.append("")
        return "\n".join(lines)

    def report(self):
        m = self.machine()
        hdr = []
        hdr.append("Command: `%s`" % " ".join(["/usr/bin/python3", "bench/accept.py"] + sys.argv[1:]))
        hdr.append("")
        hdr.append("- date: %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
        hdr.append("- machine: %d cores (`nproc`), %s, kernel %s" % (m["nproc"], m["cpu"], m["kernel"]))
        hdr.append("- disk (spools, Postfix queue, Maildir): %s" % m["disk"])
        hdr.append("- pinning: servers on core %d, smtp-source on core %d (taskset); %d parallel sessions"
                   % (self.args.server_cpu, self.args.client_cpu, self.args.sessions))
        hdr.append("- columns: wall s = client run (msg/s = messages / wall s, the accept rate); drain s = "
                   "after the client, until the server had delivered everything and its CPU use settled "
                   "(its CPU is counted); client core = smtp-source CPU / wall s")
        hdr.append("- server CPU: %s, per server process tree (children included), read before the "
                   "client starts and after the server finished its work (queue drained, deliveries counted)"
                   % self.cpu.kind)
        hdr.append("- load average before / after: %s / %s (machine shared with other builds: expect noise)"
                   % (" ".join(self.load_before), " ".join(self.load_after)))
        for n, v in self.versions.items():
            hdr.append("- %s: %s" % (n, v))
        if self.sluiced_info:
            hdr.append("- sluiced binary: %s" % self.sluiced_info)
        hdr.append("- total run time: %.0f s" % self.elapsed)
        return "\n".join(hdr) + "\n\n" + self.tables()


def install_haraka():
    os.makedirs(HARAKA_PKG, exist_ok=True)
    pj = os.path.join(HARAKA_PKG, "package.json")
    if not os.path.exists(pj):
        with open(pj, "w") as f:
            f.write('{"name": "sluice-bench-haraka", "private": true}\n')
    log("npm install Haraka into %s" % HARAKA_PKG)
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "Haraka"], cwd=HARAKA_PKG, timeout=900)
    if r.returncode != 0:
        raise SystemExit("npm install Haraka failed (exit %d)" % r.returncode)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluiced", help="path of the sluiced binary (without it, sluiced rows are skipped)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1/20 of the messages, 40 corpus files")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every message count (default 1)")
    ap.add_argument("--servers", help="comma list, default all: " + ",".join(SERVER_NAMES))
    ap.add_argument("--workloads", help="comma list, default all: " + ",".join(WORKLOAD_NAMES))
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every workload K times per server and report the median CPU per message")
    ap.add_argument("--sessions", type=int, default=20,
                    help="parallel SMTP sessions (smtp-source -s; corpus: files in flight), default 20")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--workdir", default=os.path.join(BENCH_DIR, ".work"),
                    help="where run directories go (spools, Postfix queues); default bench/.work")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (kept anyway on failure)")
    ap.add_argument("--warmup", type=int, help="unmeasured 1 KB messages per server first (default 300, quick 40)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds one workload's clients may take")
    ap.add_argument("--cpu-accounting", choices=["v2", "v1", "proc"], help="force a CPU accounting method")
    ap.add_argument("--write-results", action="store_true", help="also write bench/RESULTS.md")
    ap.add_argument("--install-haraka", action="store_true", help="npm install Haraka into bench/.cache first")
    args = ap.parse_args()

    if os.geteuid() != 0:
        raise SystemExit("run as root (private Postfix instances, cgroups)")
    for tool in (SMTP_SOURCE, SMTP_SINK, POSTFIX):
        if not os.access(tool, os.X_OK):
            raise SystemExit("%s missing: apt-get install -y postfix" % tool)
    if args.sluiced:
        args.sluiced = os.path.abspath(args.sluiced)
        if not os.access(args.sluiced, os.X_OK):
            raise SystemExit("--sluiced %s: no such executable" % args.sluiced)
    if args.install_haraka:
        install_haraka()
    if args.cpu_accounting == "proc":
        args.cpu_accounting = "none"

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rig = Rig(args)
    try:
        rig.run()
    except KeyboardInterrupt:
        log("interrupted")
        rig.failed = True
        rig.elapsed = 0
        rig.load_after = ["?"]
        rig.cpu.close()
    text = rig.report()
    print(text)
    if args.write_results:
        path = os.path.join(BENCH_DIR, "RESULTS.md")
        kept = ""
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
            if NOTES_MARK in old:
                kept = old[old.index(NOTES_MARK):]
        with open(path, "w") as f:
            f.write("# SMTP acceptance benchmark — results\n\n")
            f.write("Generated by `bench/accept.py --write-results` (see bench/README.md for what is "
                    "measured and how). Server CPU per message is the figure that matters; msg/s on this "
                    "shared 2-core machine is noisy.\n\n")
            f.write(text + "\n")
            if rig.failed:
                f.write("\n**This run had failures (see the rows marked FAILED).**\n")
            f.write("\n" + (kept or NOTES_MARK + "\n"))
        log("wrote %s" % path)
    if rig.failed:
        log("FAILURES: run directory kept at %s" % rig.workdir)
        sys.exit(1)
    if not args.keep:
        shutil.rmtree(rig.workdir, ignore_errors=True)
    else:
        log("run directory kept at %s" % rig.workdir)


if __name__ == "__main__":
    main()
