"""Shared harness for the DPDK tests in a network namespace: sluiced on a
net_tap port whose kernel side is moved into a namespace of the test's own.

    sluiced (DPDK, 10.77.0.2) --net_tap-- sltapN (kernel, 10.77.0.1, netns sluiceN)

`dpdk_netns(tmp_path)` is a context manager yielding a started DpdkSluice
with `.ns` set; it skips (with the reason) when sluiced was built without
libdpdk, when /dev/net/tun or `ip` is missing, or without root, and on exit
stops sluiced (exit 0 and a log free of errors required) and deletes the
namespace. Its keywords: `cert` (STARTTLS), `dpdk_extra` (lines added to
the dpdk section), `conf_text` (a whole configuration instead),
`stop_timeout`, `tag` (names of the tap and namespace). The pieces
(`need_dpdk_env`, `peer_ns_up`, `finish`) serve fixtures with other shapes
(test_dpdk_exception.py, test_dpdk_afpacket.py). `stats()` asks sluiced for its stack counters (SIGUSR1: one
event=dp_stats line per worker) and returns them as a dict.

`enter_netns(ns)` runs a block of the calling thread inside the namespace
(ctypes setns), so that a packet socket opened there stays bound to the
namespace's tap after the thread returns to its own.
"""

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BAD_LOG, HOSTNAME, sluiced_path

ADDR = "10.77.0.2"
PEER = "10.77.0.1"
PEER_MAC = "02:00:00:77:00:01"
PORT = 2525
CLONE_NEWNET = 0x40000000


def run(*cmd, check=True, timeout=30):
    p = subprocess.run(list(cmd), capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: got exit {p.returncode}, want 0:\n"
                             f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
    return p


class DpdkSluice:
    def __init__(self, root, tap, cert=None, dpdk_extra=""):
        self.root = Path(root)
        self.tap = tap
        self.ns = None
        self.maildir = self.root / "Maildir"
        self.logf = self.root / "sluiced.log"
        self.conf = self.root / "sluice.conf"
        self.conf.write_text(
            f"server: {{hostname: {HOSTNAME}, workers: 1, transport: dpdk}}\n"
            "listen:\n"
            f"  - address: 0.0.0.0:{PORT}\n"
            # NOOP floods drive the TCP tests (segments, SACK, PMTU): no junk limit
            "smtp: {message_size_max: 10m, greet_pause: 0, junk_max: 0}\n"
            f"spool: {{directory: {self.root / 'spool'}, sync: true}}\n"
            f"delivery: {{method: maildir, maildir: {self.maildir}, retry_min: 1s}}\n"
            + (f"tls: {{certificate: {cert[0]}, key: {cert[1]}}}\n" if cert else "") +
            "dpdk:\n"
            f'  eal: "--no-huge --no-shconf --no-pci -l 0 --vdev=net_tap0,iface={tap} '
            '--log-level=notice"\n'
            "  port: 0\n"
            f"  address: {ADDR}/24\n"
            f"  gateway: {PEER}\n"
            f"{dpdk_extra}"
            "log: {level: info}\n")
        self.proc = None
        self.exe = None

    def check_built_in(self, exe):
        p = run(exe, "--check", "-c", str(self.conf), check=False)
        out = (p.stdout + p.stderr).decode(errors="replace")
        if "built without libdpdk" in out:
            pytest.skip("sluiced was built without libdpdk (no DPDK transport)")
        assert p.returncode == 0, f"sluiced --check: got exit {p.returncode}, want 0:\n{out}"

    def start(self, exe):
        self.exe = exe
        self._logfh = open(self.logf, "ab")
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=self._logfh, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self):
        return self.logf.read_text(errors="replace") if self.logf.exists() else ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_tap(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sluiced exited with {self.proc.returncode} before the "
                                     f"tap existed; log:\n{self.log()[-4000:]}")
            if Path(f"/sys/class/net/{self.tap}").exists() and "event=start" in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"got no interface {self.tap} within {timeout}s, want one; "
                             f"log:\n{self.log()[-4000:]}")

    def has_stats(self):
        """True if this sluiced logs its stack counters on SIGUSR1 (without
        the handler SIGUSR1 would kill it)."""
        try:
            return b"event=dp_stats" in Path(self.exe).read_bytes()
        except OSError:
            return False

    def stats(self, timeout=5.0):
        """The stack counters of worker 0 as a dict of ints (conns and
        time_wait included; counters that are zero are absent)."""
        before = self.log().count("event=dp_stats")
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [l for l in self.log().splitlines() if "event=dp_stats" in l]
            if len(lines) > before:
                for l in reversed(lines):
                    if "worker=0" in l:
                        return {k: int(v) for k, v in re.findall(r"\b(\w+)=(\d+)\b", l)}
            time.sleep(0.05)
        raise AssertionError(f"got no event=dp_stats line {timeout}s after SIGUSR1, want one; "
                             f"log:\n{self.log()[-2000:]}")

    def stop(self, timeout=20.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._logfh.close()
                self.proc = None
                raise AssertionError(f"sluiced: got no exit {timeout}s after SIGTERM, want exit 0")
        rc = self.proc.returncode
        self._logfh.close()
        self.proc = None
        return rc


def need_dpdk_env(tap=True):
    """Skip (with the reason) where the DPDK tests cannot run."""
    if tap and not os.path.exists("/dev/net/tun"):
        pytest.skip("/dev/net/tun is missing (net_tap needs it)")
    if os.geteuid() != 0:
        pytest.skip("needs root (EAL, tap device, network namespace)")
    if not shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin"):
        pytest.skip("no 'ip' (Debian package iproute2)")


def peer_ns_up(dev, ns, mac=PEER_MAC):
    """Move `dev` (sluiced's net_tap, whose kernel side has the port's own
    MAC) into `ns` with another MAC and PEER/24."""
    run("ip", "link", "set", dev, "netns", ns)
    if mac:
        run("ip", "netns", "exec", ns, "ip", "link", "set", dev, "address", mac)
    run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{PEER}/24", "dev", dev)
    run("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
    run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def finish(s, timeout=20.0):
    """Stop sluiced: exit 0 after SIGTERM and no error line in its log."""
    rc = s.stop(timeout=timeout)
    assert rc == 0, f"sluiced: got exit code {rc} after SIGTERM, want 0:\n{s.log()[-3000:]}"
    bad = [l for l in s.log().splitlines() if BAD_LOG.search(l)]
    assert not bad, "got error lines in the log, want none:\n" + "\n".join(bad[:20])


def kill(s):
    """What finish() left running (a failed test): gone, no questions."""
    if s.proc is not None:
        s.proc.kill()
        s.proc.wait(10)


@contextlib.contextmanager
def dpdk_netns(root, cert=None, dpdk_extra="", conf_text=None, stop_timeout=20.0, tag=""):
    """sluiced on net_tap, the tap in a fresh namespace with the kernel at
    PEER; see the module comment."""
    exe = sluiced_path()
    need_dpdk_env()
    n = os.getpid() % 100000
    tap, ns = f"sl{tag}tap{n}", f"sluice{tag}{n}"
    s = DpdkSluice(root, tap, cert=cert, dpdk_extra=dpdk_extra)
    if conf_text is not None:
        s.conf.write_text(conf_text(tap) if callable(conf_text) else conf_text)
    s.check_built_in(exe)
    run("ip", "netns", "del", ns, check=False)
    run("ip", "netns", "add", ns)
    try:
        s.start(exe)
        s.wait_tap()
        peer_ns_up(tap, ns)
        s.ns = ns
        yield s
        finish(s, stop_timeout)
    finally:
        kill(s)
        run("ip", "netns", "del", ns, check=False)


def in_ns(s, *cmd, timeout=120):
    return subprocess.run(["ip", "netns", "exec", s.ns, *cmd], capture_output=True,
                          timeout=timeout)


_libc = None


def _setns(fd):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def enter_netns(ns):
    """Run the block with the calling thread in namespace `ns`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
