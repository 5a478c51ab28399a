#!/usr/bin/python3
"""Virus-scan throughput: sluiced's libclamav pool against clamscan.

    /usr/bin/python3 bench/av.py --avscan build/control/sluice-avscan [--rounds 5]

Both scan the same files with the same signature database, one thread each,
on core 0:
- sluice-avscan: the pool sluiced uses (ctl_av: RCU-published engine, files
  scanned from memory with cl_fmap_open_memory), ROUNDS passes over the set;
- clamscan: the same files listed ROUNDS times, minus a run on one empty
  file, so that its database load is not counted as scanning.

The database is made here (there is no network for freshclam): MD5 hash
signatures for the clamav-testfiles samples (so they are found), plus
--sigs random body signatures (.ndb) and as many random hashes (.hdb), so
that the matcher has real work; a production database holds millions of
signatures and loads for tens of seconds, so absolute figures here are
higher than in production and the ratio is what to read.
Files: the clamav-testfiles samples and generated attachments (random
binary, text, and zip-like blobs, 4 KiB to 1 MiB). Prints a table; with
--write-results replaces the "av" section of bench/RESULTS.md.
"""
import argparse
import hashlib
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- av.py begin -->", "<!-- av.py end -->"


def make_db(d, nsigs, rng):
    d.mkdir(parents=True, exist_ok=True)
    hdb = []
    tf = Path("/usr/share/clamav-testfiles")
    for p in sorted(tf.glob("clam*")) if tf.is_dir() else []:
        b = p.read_bytes()
        hdb.append(f"{hashlib.md5(b).hexdigest()}:{len(b)}:Sluice.Test.{p.name}")
    for i in range(nsigs):
        hdb.append(f"{rng.randbytes(16).hex()}:{rng.randint(100, 10**6)}:Sluice.Rand.H{i}")
    (d / "bench.hdb").write_text("\n".join(hdb) + "\n")
    ndb = [f"Sluice.Rand.N{i}:0:*:{rng.randbytes(rng.randint(12, 24)).hex()}" for i in range(nsigs)]
    (d / "bench.ndb").write_text("\n".join(ndb) + "\n")
    return len(hdb) + len(ndb)


def make_files(d, n, rng):
    d.mkdir(parents=True, exist_ok=True)
    files = []
    tf = Path("/usr/share/clamav-testfiles")
    for p in sorted(tf.glob("clam*")) if tf.is_dir() else []:
        dst = d / p.name
        shutil.copyfile(p, dst)
        files.append(dst)
    words = b"invoice payment order report quarterly attached please find the and of to".split()
    for i in range(n):
        size = int(4096 * (256 ** rng.random()))  # 4 KiB .. 1 MiB, log-uniform
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(size)
        elif kind == 1:
            data = b" ".join(rng.choice(words) for _ in range(size // 6))[:size]
        else:
            data = b"PK\x03\x04" + rng.randbytes(size - 4)
        p = d / f"att{i:04d}.bin"
        p.write_bytes(data)
        files.append(p)
    return files


def run_cpu(cmd):
    """Run cmd on core 0; returns (wall s, child CPU s, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(["taskset", "-c", "0"] + cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--avscan", required=True, help="path to sluice-avscan")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--files", type=int, default=150)
    ap.add_argument("--sigs", type=int, default=20000)
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    if not shutil.which("clamscan"):
        sys.exit("bench/av.py: clamscan is missing (Debian package clamav)")
    rng = random.Random(20261123)
    work = Path(tempfile.mkdtemp(prefix="sluice-av-"))
    try:
        print("av.py: making the database and the files ...", file=sys.stderr)
        nsig = make_db(work / "db", a.sigs, rng)
        files = make_files(work / "files", a.files, rng)
        total = sum(p.stat().st_size for p in files)
        empty = work / "empty"
        empty.write_bytes(b"")

        print("av.py: sluice-avscan ...", file=sys.stderr)
        wall, cpu, p = run_cpu([a.avscan, "-q", "-d", str(work / "db"), "-t", "1",
                                "-n", str(a.rounds)] + [str(f) for f in files])
        m = re.search(r"files_per_s=([\d.]+) mb_per_s=([\d.]+) cpu_ms_per_file=([\d.]+) viruses=(\d+)", p.stdout)
        if p.returncode != 0 or not m:
            sys.exit(f"bench/av.py: sluice-avscan failed ({p.returncode}): {p.stderr}{p.stdout}")
        s_fps, s_mbps, s_cpu, s_vir = float(m[1]), float(m[2]), float(m[3]), int(m[4])

        print("av.py: clamscan (database load only) ...", file=sys.stderr)
        w0, c0, p0 = run_cpu(["clamscan", "--no-summary", "-d", str(work / "db"), str(empty)])
        print("av.py: clamscan ...", file=sys.stderr)
        w1, c1, p1 = run_cpu(["clamscan", "--no-summary", "--infected", "-d", str(work / "db")]
                             + [str(f) for f in files] * a.rounds)
        if p1.returncode not in (0, 1):
            sys.exit(f"bench/av.py: clamscan failed ({p1.returncode}): {p1.stderr[-2000:]}")
        c_vir = p1.stdout.count(" FOUND") // a.rounds
        n = len(files) * a.rounds
        c_wall, c_cpu = max(w1 - w0, 1e-9), max(c1 - c0, 1e-9)
        c_fps, c_mbps, c_cpu_ms = n / c_wall, total * a.rounds / 1e6 / c_wall, c_cpu * 1e3 / n
        if s_vir != c_vir:
            sys.exit(f"bench/av.py: verdicts differ: sluice found {s_vir}, clamscan {c_vir}")

        machine = f"{os.cpu_count()} cores, {os.uname().release}"
        table = "\n".join([
            f"| scanner | files/s | MB/s | CPU ms/file | found |",
            f"|---|---:|---:|---:|---:|",
            f"| sluice-avscan (1 scan thread) | {s_fps:.0f} | {s_mbps:.1f} | {s_cpu:.3f} | {s_vir} |",
            f"| clamscan (load subtracted) | {c_fps:.0f} | {c_mbps:.1f} | {c_cpu_ms:.3f} | {c_vir} |",
            f"| ratio sluice / clamscan | {s_fps / c_fps:.2f}x | {s_mbps / c_mbps:.2f}x | {s_cpu / c_cpu_ms:.2f}x | |",
        ])
        report = (f"## Virus scanning: sluice's libclamav pool vs clamscan\n\n"
                  f"Command: `/usr/bin/python3 bench/av.py --avscan {a.avscan} --rounds {a.rounds}`  \n"
                  f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine}; "
                  f"database: {nsig} generated signatures; files: {len(files)} "
                  f"({total / 1e6:.1f} MB) x {a.rounds} rounds, core 0.\n\n{table}\n\n"
                  f"clamscan's database load ({w0:.2f} s wall) is subtracted; both use one thread "
                  f"and the same libclamav. sluice scans from memory (no temporary files), clamscan "
                  f"reads each file from the page cache.\n")
        print(report)
        if a.write_results:
            res = HERE / "RESULTS.md"
            text = res.read_text() if res.exists() else ""
            block = f"{BEGIN}\n{report}{END}\n"
            if BEGIN in text and END in text:
                text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1:]
            else:
                text = text.rstrip("\n") + "\n\n" + block
            res.write_text(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
