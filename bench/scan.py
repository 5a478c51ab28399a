#!/usr/bin/python3
"""Side-by-side scanning benchmark (issue 4, part 7): sluice's rule engine
against SpamAssassin and rspamd, on the shared corpus, one core each.

- sluice: `sluice-rules` (scan/sluice-rules.c) with the full Debian rule set
  (/usr/share/spamassassin), streaming mode, the corpus scanned N times in
  one process; a run with no repeats is subtracted, so the figure is the
  per-message scan cost without start-up or the cache load.
- SpamAssassin: `spamassassin -L --mbox` (local tests only, dns_available no,
  no Bayes, no AWL/TxRep) over the corpus as one mbox in one process; a run
  over the first message alone is subtracted (Perl start-up, rule compile).
- rspamd: a private instance (own config dir, db, logs) with one normal
  worker and the controller on loopback, every network module off (no DNS
  server reachable, no RBL/SURBL, fuzzy, neural, DKIM/SPF/DMARC/ARC, ASN,
  MX check, Redis users); the corpus POSTed to /checkv2 over one keep-alive
  connection by this script (pinned to the other core), after one unmeasured
  pass; all of rspamd's processes are counted.

Every engine runs pinned to one core (default 0) in its own cgroup (v2
cpu.stat, else v1 cpuacct, else /proc; accept.py's helpers): the figure is
messages per CPU second of that engine = msgs/s per core. Wall-clock rates
are printed too; on a shared machine, trust the CPU figures.

  /usr/bin/python3 bench/scan.py --sluice-rules build/scan/sluice-rules
  /usr/bin/python3 bench/scan.py --sluice-rules build/scan/sluice-rules --write-results

Needs root (cgroups), Debian's spamassassin and rspamd packages.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
import accept as A  # noqa: E402  (cgroups, helpers)

CACHE_DIR = os.path.join(BENCH_DIR, ".cache")
SA_RULES = "/usr/share/spamassassin"
SECTION_START = "<!-- scan.py: start of its section (rewritten by scan.py --write-results) -->"
SECTION_END = "<!-- scan.py: end of its section -->"
# given with the task, for this kind of machine (msgs/s per core)
REFERENCE = [
    ("SpamAssassin", "4.3"),
    ("rspamd", "331"),
    ("naive Hyperscan block-mode database of SA's 521 compilable body rules", "1,139"),
]
RSPAMD_OFF = ["rbl", "surbl", "fuzzy_check", "neural", "dkim", "dkim_signing", "spf", "dmarc", "arc",
              "asn", "mx_check", "dcc", "greylist", "ratelimit", "replies", "reputation", "history_redis",
              "url_redirector", "rspamd_update", "metric_exporter", "clickhouse", "elastic", "antivirus",
              "external_services", "p0f", "bimi", "emails", "hfilter", "aws_s3", "metadata_exporter",
              "phishing"]


def log(msg):
    sys.stderr.write("[scan %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class Fail(Exception):
    pass


def corpus_dir(args):
    if args.corpus:
        return os.path.abspath(args.corpus)
    msgs = os.path.join(CACHE_DIR, "corpus", "msgs")
    if not os.path.isdir(msgs) or len(os.listdir(msgs)) < 200:
        # make_corpus.py takes the Debian samples that are installed: without
        # them it makes a different (larger) set, not the one the figures use
        missing = [p for p in ("spamassassin", "libpython3.11-testsuite", "clamav-testfiles")
                   if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                     text=True).stdout.find("install ok installed") < 0]
        if missing:
            raise Fail("the shared corpus needs %s installed (apt-get install -y %s): without "
                       "them make_corpus.py makes a different set" % (", ".join(missing), " ".join(missing)))
        log("generating the shared corpus into %s" % msgs)
        os.makedirs(os.path.dirname(msgs), exist_ok=True)
        r = subprocess.run(["/usr/bin/python3", A.CORPUS_GEN, msgs], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise Fail("make_corpus.py failed: %s" % r.stderr.strip()[-300:])
    return msgs


def run_in_cgroup(acct, name, argv, cpu, stdin=None, env=None, timeout=3600):
    """Run argv pinned to core cpu in a fresh cgroup; return (stdout, stderr,
    cpu seconds, wall seconds)."""
    cg = acct.new(name)
    try:
        u0, s0 = cg.read()
        t0 = time.monotonic()
        p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdin=stdin or subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             preexec_fn=A.in_cgroup_preexec(cg))
        if isinstance(cg, A.ProcTree):
            cg.roots.append(p.pid)
        out, err = p.communicate(timeout=timeout)
        wall = time.monotonic() - t0
        u1, s1 = cg.read()
        if p.returncode != 0:
            raise Fail("%s: exit %d: %s" % (argv[0], p.returncode, err.decode(errors="replace")[-500:]))
        cpu_s = (u1 - u0 + s1 - s0) / 1e6
        return out.decode(errors="replace"), err.decode(errors="replace"), cpu_s, wall
    finally:
        cg.remove()


# --------------------------------------------------------------------------
# sluice

def sluice_bench(args, acct, msgs, rep):
    """The full rule set and, with --shed P, the same with P% shed (-x P,
    its own cache file), their runs alternating so that the machine's
    swings hit both alike."""
    confs = [sluice_prepare(args, acct, [], args.cache, args.cold)]
    if args.shed > 0:
        root, ext = os.path.splitext(args.cache)
        confs.append(sluice_prepare(args, acct, ["-x", "%g" % args.shed],
                                    "%s-x%g%s" % (root, args.shed, ext), False))
    for k in range(rep):
        for res in confs:
            sluice_run(args, acct, msgs, res, k)
    confs[0]["shed"] = confs[1] if len(confs) > 1 else None
    return confs[0]


def sluice_prepare(args, acct, extra, cache, cold_build):
    tool = os.path.abspath(args.sluice_rules)
    cache = os.path.abspath(cache)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    res = {"tool": tool, "extra": extra, "runs": []}
    st = os.stat(tool)
    res["tool_info"] = "%s (%d bytes, modified %s, sha256 %s…)" % (
        tool, st.st_size, time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.st_mtime)),
        hashlib.sha256(open(tool, "rb").read()).hexdigest()[:16])
    base = [tool, "-r", args.rules] + extra + ["-c", cache]
    res["base"] = base
    if not os.path.exists(cache):
        log("sluice %s: no cache at %s: a cold build first (3 to 10 minutes)" % (" ".join(extra), cache))
    if cold_build:
        cold = cache + ".cold"
        for p in (cold,):
            if os.path.exists(p):
                os.unlink(p)
        log("sluice: cold build (no cache file; about 2 minutes)")
        out, _, cpu_s, wall = run_in_cgroup(acct, "sluice-cold", [tool, "-r", args.rules, "-c", cold], args.cpu)
        m = re.search(r"cache (\w+) \((-?\d+)\); build ([\d.]+) s", out)
        res["cold"] = {"build_s": float(m.group(3)) if m else None, "cpu_s": cpu_s, "wall_s": wall,
                       "cache_bytes": os.path.getsize(cold) if os.path.exists(cold) else None}
        if not os.path.exists(cache) and os.path.exists(cold):
            shutil.copyfile(cold, cache)
        os.unlink(cold)
    # make sure the cache is there, then measure start-up + one pass
    out, _, _, _ = run_in_cgroup(acct, "sluice-load", base, args.cpu)
    info = {}
    for line in out.splitlines():
        if line.startswith("databases:"):
            info["databases"] = line[len("databases:"):].strip()
        m = re.search(r"cache (\w+) \((-?\d+)\); build ([\d.]+) s", line)
        if m:
            info["cache"] = m.group(1)
            info["load_s"] = float(m.group(3))
        if line.startswith("regex rules in effect"):
            info["in_effect"] = line.strip()
        if line.startswith("shed ("):
            info["shed"] = line.strip()
        for key in ("gates databases", "stream apart", "own gates", "deferred", "squeeze databases",
                    "chain gates", "filtered", "counted without"):
            if line.startswith(key):
                info.setdefault("engine", []).append(line.strip())
    res["info"] = info
    return res


def sluice_run(args, acct, msgs, res, k):
    base = res["base"]
    runs = res["runs"]
    o0, _, c0, w0 = run_in_cgroup(acct, "sluice-0", base + ["-d", msgs, "-q"], args.cpu)
    o1, _, c1, w1 = run_in_cgroup(acct, "sluice-n", base + ["-d", msgs, "-q", "-n", str(args.sluice_n)],
                                     args.cpu)
    m = re.search(r"scanned (\d+) messages \(([\d.]+) KB avg\): (.*)", o1)
    t = re.search(r"throughput: (\d+) msgs/s, ([\d.]+) MB/s \((\d+) x (\d+) messages, ([\d.]+) s", o1)
    if not m or not t:
        raise Fail("sluice-rules: unexpected output:\n" + o1[-800:])
    n = int(t.group(3)) * int(t.group(4))
    cpu = c1 - c0
    runs.append({"n": n, "cpu_s": cpu, "wall_s": float(t.group(5)), "wall_rate": int(t.group(1)),
                 "wall_mbs": float(t.group(2)), "verdicts": m.group(3).strip(), "load_cpu_s": c0})
    log("sluice%s run %d: %d scans, %.2f CPU s (%.0f msgs/s per core), wall %s msgs/s" % (
        (" " + " ".join(res["extra"])) if res["extra"] else "", k + 1, n, cpu, n / cpu, t.group(1)))


# --------------------------------------------------------------------------
# SpamAssassin

def write_mbox(files, path):
    """mbox for spamassassin --mbox; a body line starting with "From " gets
    ">From " (mboxrd), so the message count stays right."""
    escaped = 0
    with open(path, "wb") as out:
        for f in files:
            data = open(f, "rb").read().replace(b"\r\n", b"\n")
            lines = data.split(b"\n")
            for i, ln in enumerate(lines):
                if re.match(rb"^>*From ", ln):
                    lines[i] = b">" + ln
                    escaped += 1
            out.write(b"From bench@scan.test Mon Nov 23 00:00:00 2026\n" + b"\n".join(lines).rstrip(b"\n") + b"\n\n")
    return escaped


def sa_bench(args, acct, files, tmp):
    sel = files
    if args.sa_msgs and args.sa_msgs < len(files):
        step = len(files) / args.sa_msgs
        sel = [files[int(i * step)] for i in range(args.sa_msgs)]
    home = os.path.join(tmp, "sa-home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, HOME=home, LANG="C", LC_ALL="C")
    cf = ["--cf=dns_available no", "--cf=use_bayes 0", "--cf=bayes_auto_learn 0",
          "--cf=use_auto_whitelist 0", "--cf=use_txrep 0", "--cf=skip_rbl_checks 1"]
    argv = ["spamassassin", "-L", "--mbox"] + cf
    one = os.path.join(tmp, "one.mbox")
    alln = os.path.join(tmp, "sel.mbox")
    write_mbox(sel[:1], one)
    escaped = write_mbox(sel, alln)
    ver = subprocess.run(["spamassassin", "-V"], capture_output=True, text=True).stdout.split("\n")[0]
    runs = []
    for k in range(args.sa_repeat):
        with open(one, "rb") as f:
            o0, _, c0, w0 = run_in_cgroup(acct, "sa-1", argv, args.cpu, stdin=f, env=env)
        with open(alln, "rb") as f:
            o1, _, c1, w1 = run_in_cgroup(acct, "sa-n", argv, args.cpu, stdin=f, env=env)
        got = len(re.findall(r"^X-Spam-Status: ", o1, re.M))
        if got != len(sel):
            raise Fail("spamassassin checked %d of %d messages" % (got, len(sel)))
        spam = len(re.findall(r"^X-Spam-Status: Yes", o1, re.M))
        n = len(sel) - 1
        runs.append({"n": n, "cpu_s": c1 - c0, "wall_s": w1 - w0, "startup_cpu_s": c0, "spam": spam,
                     "total_cpu_s": c1, "msgs": len(sel)})
        log("spamassassin run %d: %d msgs, %.2f CPU s over start-up (%.2f msgs/s per core); start-up %.2f CPU s" % (
            k + 1, n, c1 - c0, n / (c1 - c0), c0))
    return {"version": ver, "runs": runs, "selected": len(sel), "escaped": escaped}


# --------------------------------------------------------------------------
# rspamd

RSPAMD_CONF = """# private rspamd for bench/scan.py: Debian's config, network modules off
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    .include "$CONFDIR/logging.inc"
}
worker "normal" {
    bind_socket = "127.0.0.1:@NORMAL@";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}
worker "controller" {
    bind_socket = "127.0.0.1:@CONTROLLER@";
    .include "$CONFDIR/worker-controller.inc"
    count = 1;
}
"""


def rspamd_bench(args, acct, files, tmp):
    d = os.path.join(tmp, "rspamd")
    for sub in ("local.d", "db", "run", "log"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    port, cport = A.free_port(), A.free_port()
    dead_dns = A.free_port()
    with open(os.path.join(d, "rspamd.conf"), "w") as f:
        f.write(RSPAMD_CONF.replace("@NORMAL@", str(port)).replace("@CONTROLLER@", str(cport)))
    with open(os.path.join(d, "local.d", "options.inc"), "w") as f:
        # nothing listens there: a DNS query, if any module still made one, fails at once
        f.write('dns { nameserver = ["127.0.0.1:%d"]; timeout = 0.1s; retransmits = 0; }\n' % dead_dns)
    for m in RSPAMD_OFF:
        with open(os.path.join(d, "local.d", m + ".conf"), "w") as f:
            f.write("enabled = false;\n")
    ver = subprocess.run(["rspamd", "--version"], capture_output=True, text=True).stdout.strip()
    cg = acct.new("rspamd")
    logf = os.path.join(d, "log", "rspamd.log")
    out = open(os.path.join(d, "log", "stdout"), "wb")
    argv = ["taskset", "-c", str(args.cpu), "rspamd", "-f", "-i", "-u", "root", "-g", "root",
            "-c", os.path.join(d, "rspamd.conf")]
    for k, v in (("LOCAL_CONFDIR", d), ("DBDIR", d + "/db"), ("RUNDIR", d + "/run"), ("LOGDIR", d + "/log")):
        argv += ["--var", "%s=%s" % (k, v)]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         preexec_fn=A.in_cgroup_preexec(cg))
    out.close()
    if isinstance(cg, A.ProcTree):
        cg.roots.append(p.pid)
    try:
        # ready: the normal worker listens and the hs_helper has compiled the
        # regexp module's Hyperscan databases and told the workers to load them
        deadline = time.time() + 600
        while time.time() < deadline:
            if p.poll() is not None:
                raise Fail("rspamd exited with %s; see %s" % (p.returncode, logf))
            text = open(logf, errors="replace").read() if os.path.exists(logf) else ""
            m = re.search(r"hyperscan tree, postpone loaded notification for (\d+)", text)
            if m or "send loaded notification" in text:
                time.sleep((int(m.group(1)) if m else 0) + 3)
                break
            time.sleep(1)
        else:
            raise Fail("rspamd: no Hyperscan load within 600 s; see %s" % logf)
        os.sched_setaffinity(0, {args.client_cpu})
        bodies = [open(f, "rb").read() for f in files]

        def one_pass(conn):
            acts = {}
            for b in bodies:
                conn.request("POST", "/checkv2", body=b, headers={"Content-Type": "message/rfc822"})
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise Fail("rspamd: HTTP %d: %r" % (r.status, data[:200]))
                j = json.loads(data)
                if "action" not in j:
                    raise Fail("rspamd: no action in reply: %r" % data[:200])
                acts[j["action"]] = acts.get(j["action"], 0) + 1
            return acts

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        one_pass(conn)          # warm-up, unmeasured
        time.sleep(1)
        runs = []
        for k in range(args.rspamd_repeat):
            u0, s0 = cg.read()
            t0 = time.monotonic()
            cu0 = os.times()
            acts = {}
            for _ in range(args.rspamd_n):
                for a, n in one_pass(conn).items():
                    acts[a] = acts.get(a, 0) + n
            wall = time.monotonic() - t0
            cu1 = os.times()
            time.sleep(0.3)
            u1, s1 = cg.read()
            n = len(bodies) * args.rspamd_n
            cpu = (u1 - u0 + s1 - s0) / 1e6
            runs.append({"n": n, "cpu_s": cpu, "wall_s": wall, "acts": acts,
                         "client_cpu_s": (cu1.user - cu0.user) + (cu1.system - cu0.system)})
            log("rspamd run %d: %d msgs, %.2f CPU s (%.0f msgs/s per core), wall %.0f msgs/s" % (
                k + 1, n, cpu, n / cpu, n / wall))
        conn.close()
        text = open(logf, errors="replace").read()
        dns = [int(x) for x in re.findall(r"dns req: (\d+)", text)]
        return {"version": ver, "runs": runs, "dir": d, "tasks_logged": len(dns), "dns_req": sum(dns)}
    finally:
        A.stop_proc(p, "rspamd")
        if not isinstance(cg, A.ProcTree):
            A.kill_cgroup_leftovers(cg, "rspamd")
        cg.remove()
        os.sched_setaffinity(0, set(range(os.cpu_count())))


# --------------------------------------------------------------------------
# report

def median_run(runs):
    return sorted(runs, key=lambda r: r["n"] / r["cpu_s"])[len(runs) // 2]


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "%d cores (`nproc`), %s, kernel %s" % (os.cpu_count(), model, platform.release())


def report(args, msgs, nbytes, sl, sa, rs, acct, load0, load1, elapsed):
    avg_kb = nbytes / len(msgs) / 1024
    L = []
    L.append("Command: `/usr/bin/python3 bench/scan.py %s`" % " ".join(sys.argv[1:]))
    L.append("")
    L.append("- date: %s UTC" % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"))
    L.append("- machine: %s" % machine())
    L.append("- corpus: %s, %d messages, %.1f MB, %.1f KB average (make_corpus.py)" % (
        args.corpus_shown, len(msgs), nbytes / 1e6, avg_kb))
    L.append("- pinning: every engine on core %d (taskset), in its own cgroup; rspamd's client (this script) on core %d"
             % (args.cpu, args.client_cpu))
    L.append("- CPU: %s; msgs/s per core = messages / (user + sys CPU seconds of the engine's processes)" % acct.kind)
    L.append("- load average before / after: %s / %s (shared machine)" % (" ".join(load0), " ".join(load1)))
    L.append("- total run time: %.0f s" % elapsed)
    if sl:
        L.append("- sluice-rules: %s; rules %s" % (sl["tool_info"], args.rules))
    if sa:
        L.append("- SpamAssassin: %s" % sa["version"])
    if rs:
        L.append("- rspamd: %s" % rs["version"])
    L.append("")
    L.append("| engine | what runs | messages measured | CPU s | CPU ms/msg | msgs/s per core | MB/s per core | wall msgs/s | runs (msgs/s per core) | vs sluice |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    base = None
    rows = []
    if sl:
        r = median_run(sl["runs"])
        base = r["n"] / r["cpu_s"]
        rows.append(("sluice (sluice-rules)", "all Debian regex rules + metas, streaming Hyperscan + PCRE2, the end of each message lazy as in sluiced (a rule runs only if it can still move the verdict); corpus × %d in one process, minus a run with none" % args.sluice_n, r, sl["runs"]))
        if sl.get("shed"):
            x = sl["shed"]
            eff = re.search(r"\(([\d.]+%)\)", x["info"].get("in_effect", ""))
            rows.append(("sluice, shed %g%% (`-x %g`)" % (args.shed, args.shed), "the same, the costliest rules on the sample text left out: %s of the regex rules in effect" % (eff.group(1) if eff else "?"), median_run(x["runs"]), x["runs"]))
    if sa:
        r = median_run(sa["runs"])
        rows.append(("SpamAssassin %s" % sa["version"].split()[-1], "`spamassassin -L --mbox` (local tests only), %d messages in one process, minus a 1-message run (start-up)" % sa["selected"], r, sa["runs"]))
    if rs:
        r = median_run(rs["runs"])
        rows.append(("rspamd %s" % rs["version"].split()[-1], "1 normal worker + controller, network modules off; /checkv2 over keep-alive HTTP, corpus × %d after a warm-up pass" % args.rspamd_n, r, rs["runs"]))
    for name, what, r, runs in rows:
        per = r["n"] / r["cpu_s"]
        mbs = per * nbytes / len(msgs) / 1e6
        L.append("| %s | %s | %d | %.2f | %.3f | %s | %s | %.1f | %s | %s |" % (
            name, what, r["n"], r["cpu_s"], 1000 * r["cpu_s"] / r["n"], fmt_rate(per),
            ("%.1f" if mbs >= 1 else "%.3f") % mbs, r["n"] / r["wall_s"],
            ", ".join(fmt_rate(x["n"] / x["cpu_s"]) for x in runs),
            vs(base, per, name)))
    L.append("")
    L.append("Reference points for this kind of machine (msgs/s per core, given with the task): "
             + "; ".join("%s %s" % (a, b) for a, b in REFERENCE) + ".")
    if sl:
        L.append("")
        L.append("sluice details:")
        i = sl["info"]
        if sl.get("cold"):
            c = sl["cold"]
            L.append("- cold build (no cache file): %.1f s as reported by sluice-rules (%.1f CPU s, %.1f s wall for the whole process); cache file %s bytes"
                     % (c["build_s"] or -1, c["cpu_s"], c["wall_s"], c["cache_bytes"]))
        L.append("- warm start: cache %s, load %.2f s" % (i.get("cache", "?"), i.get("load_s", -1)))
        if i.get("in_effect"):
            L.append("- %s" % i["in_effect"])
        if i.get("databases"):
            L.append("- databases (patterns / size / stream state per message): %s" % i["databases"])
        for line in i.get("engine", []):
            L.append("- %s" % line)
        r = median_run(sl["runs"])
        L.append("- verdicts over the corpus (default policy 5/10/15): %s" % r["verdicts"])
        L.append("- sluice-rules' own wall-clock figure for the median run: %d msgs/s, %.1f MB/s" % (r["wall_rate"], r["wall_mbs"]))
        if sl.get("shed"):
            x = sl["shed"]
            L.append("- with `-x %g`: %s; %s" % (args.shed, x["info"].get("in_effect", "?"), x["info"].get("shed", "nothing shed")))
            L.append("- with `-x %g`, verdicts over the corpus: %s" % (args.shed, median_run(x["runs"])["verdicts"]))
    if sa:
        r = median_run(sa["runs"])
        L.append("- SpamAssassin: start-up (1-message run) %.2f CPU s; %d of %d messages marked spam; %d body lines starting \"From \" escaped as \">From \" for the mbox"
                 % (r["startup_cpu_s"], r["spam"], r["msgs"], sa["escaped"]))
    if rs:
        r = median_run(rs["runs"])
        L.append("- rspamd: actions %s; client (this script) CPU %.2f s over %.2f s wall; DNS requests in rspamd's task log: %d over %d tasks (Debian's logging.inc: level info, one line per task, kept as shipped)"
                 % (", ".join("%s %d" % kv for kv in sorted(r["acts"].items())), r["client_cpu_s"], r["wall_s"], rs["dns_req"], rs["tasks_logged"]))
        L.append("- rspamd modules disabled: %s; DNS pointed at a loopback port nothing listens on" % ", ".join(RSPAMD_OFF))
    return "\n".join(L)


def vs(base, per, name):
    if not base:
        return ""
    if name == "sluice (sluice-rules)":
        return "1.0×"
    q = base / per
    return ("%.1f× slower" % q) if q >= 1 else ("%.1f× faster" % (1 / q))


def fmt_rate(x):
    return "{:,.0f}".format(x) if x >= 100 else "%.1f" % x


def write_results(text):
    path = os.path.join(BENCH_DIR, "RESULTS.md")
    with open(path) as f:
        old = f.read()
    if A.NOTES_MARK not in old:
        old = old.rstrip("\n") + "\n\n" + A.NOTES_MARK + "\n"
    section = (SECTION_START + "\n\n## Scanning benchmark (bench/scan.py)\n\n"
               "Generated by `bench/scan.py --write-results`; below accept.py's marker line, so accept.py keeps it, "
               "and scan.py rewrites only what is between its own two markers.\n\n" + text + "\n\n" + SECTION_END + "\n")
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice-rules", default=os.path.join(REPO_DIR, "build", "scan", "sluice-rules"))
    ap.add_argument("--rules", default=SA_RULES, help="rule directory for sluice (default %s)" % SA_RULES)
    ap.add_argument("--cache", default=os.path.join(CACHE_DIR, "scan", "rules.hs"), help="sluice's Hyperscan cache file")
    ap.add_argument("--corpus", help="directory of messages (default: the shared corpus in bench/.cache/corpus/msgs)")
    ap.add_argument("--engines", default="sluice,spamassassin,rspamd")
    ap.add_argument("--cold", action="store_true", help="also time a cold sluice build (about 2 minutes)")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per engine (median reported)")
    ap.add_argument("--sluice-n", type=int, default=5, help="corpus passes per sluice run")
    ap.add_argument("--shed", type=float, default=5, help="also run sluice with the costliest rules shed until this percent of the rules is out of effect (sluice-rules -x; 0: not)")
    ap.add_argument("--sa-msgs", type=int, default=0, help="SpamAssassin: an evenly spread subset of N messages")
    ap.add_argument("--rspamd-n", type=int, default=2, help="corpus passes per rspamd run")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--cpu-accounting", choices=["v2", "v1", "proc"])
    ap.add_argument("--sa-repeat", type=int, default=1, help="SpamAssassin runs (slow: about 2 minutes each for 200 messages)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (rspamd's config and log)")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    args.rspamd_repeat = args.repeat
    engines = set(args.engines.split(","))
    if os.geteuid() != 0:
        raise SystemExit("run as root (cgroups)")
    if "sluice" in engines and not os.access(args.sluice_rules, os.X_OK):
        raise SystemExit("--sluice-rules %s: no such executable" % args.sluice_rules)
    msgs = corpus_dir(args)
    args.corpus_shown = os.path.relpath(msgs, REPO_DIR) if msgs.startswith(REPO_DIR) else msgs
    files = sorted(os.path.join(msgs, f) for f in os.listdir(msgs) if os.path.isfile(os.path.join(msgs, f)))
    nbytes = sum(os.path.getsize(f) for f in files)
    acct = A.CpuAccounting("proc" if args.cpu_accounting == "proc" else args.cpu_accounting)
    tmp = tempfile.mkdtemp(prefix="sluice-scan-bench-")
    load0 = open("/proc/loadavg").read().split()[:3]
    t0 = time.monotonic()
    sl = sa = rs = None
    ok = True
    try:
        if "sluice" in engines:
            sl = sluice_bench(args, acct, msgs, args.repeat)
        if "spamassassin" in engines:
            sa = sa_bench(args, acct, files, tmp)
        if "rspamd" in engines:
            rs = rspamd_bench(args, acct, files, tmp)
    except Fail as e:
        log("FAILED: %s" % e)
        ok = False
    finally:
        acct.close()
    load1 = open("/proc/loadavg").read().split()[:3]
    text = report(args, files, nbytes, sl, sa, rs, acct, load0, load1, time.monotonic() - t0)
    print(text)
    if ok and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.write_results:
            write_results(text)
    else:
        log("kept %s" % tmp)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
