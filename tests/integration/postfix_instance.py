"""A private Postfix instance on loopback, for relaying into sluiced.

Everything lives under one directory (config, queue, data, log); the system
instance is never touched. Postfix's daemons run as `postfix`, so the
directory is made outside pytest's root-only tmp tree and opened to others.
No lookup reaches DNS: next hops are numeric ([127.0.0.1]:port), smtp does
no DNS, smtpd does not look up client names.

Usable alone for checking the harness:
    /usr/bin/python3 postfix_instance.py SINK_PORT   (relays to that port)
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# Master services this test needs; none chrooted, so no chroot setup.
MASTER_CF = """\
{smtpd_port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
plain     unix  - - n -  - smtp
  -o smtp_tls_security_level=none
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
showq     unix  n - n -  - showq
postlog   unix-dgram n - n - 1 postlogd
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postfix:
    """transports: {domain: "service:[127.0.0.1]:port"}."""

    def __init__(self, transports, myhostname="relay.test.example", netns=None):
        # netns: run every Postfix daemon inside that network namespace
        # (its loopback serves smtpd; the next hops are reached from there).
        self.netns = netns
        self.root = Path(tempfile.mkdtemp(prefix="sluice-postfix-"))
        os.chmod(self.root, 0o755)
        self.conf = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.maillog = self.root / "maillog"
        for d in (self.conf, self.queue, self.data):
            d.mkdir()
        shutil.chown(self.data, "postfix", "postfix")
        self.port = _free_port()
        self.myhostname = myhostname
        tmap = ", ".join(f"{d}={t}" for d, t in transports.items())
        main = f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {myhostname}
mydomain = test.example
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {", ".join(transports)}
transport_maps = inline:{{ {tmap} }}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtputf8_enable = yes
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
delay_warning_time = 0
"""
        (self.conf / "main.cf").write_text(main)
        (self.conf / "master.cf").write_text(MASTER_CF.format(smtpd_port=f"127.0.0.1:{self.port}"))
        self.started = False

    def postfix(self, *args, timeout=60):
        pre = ["ip", "netns", "exec", self.netns] if self.netns else []
        return subprocess.run(pre + ["postfix", "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self, timeout=30):
        for step in (("check",), ("start",)):
            p = self.postfix(*step)
            if p.returncode != 0:
                raise RuntimeError(f"postfix {' '.join(step)}: exit {p.returncode}\n{p.stdout}{p.stderr}\n"
                                   f"maillog:\n{self.log()}")
        self.started = True
        deadline = time.monotonic() + timeout
        while self.netns:
            probe = ("import socket,sys\ns=socket.create_connection(('127.0.0.1',%d),timeout=2)\n"
                     "s.settimeout(5)\nsys.exit(0 if s.recv(512).startswith(b'220') else 1)" % self.port)
            p = subprocess.run(["ip", "netns", "exec", self.netns, "/usr/bin/python3", "-c", probe],
                               capture_output=True, timeout=30)
            if p.returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix smtpd on {self.port} in {self.netns}: no 220 within "
                                   f"{timeout}s\n{self.log()}")
            time.sleep(0.2)
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix smtpd on {self.port}: no 220 within {timeout}s\n{self.log()}")
            time.sleep(0.2)

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def flush(self):
        self.postfix("flush")

    def stop(self):
        if self.started:
            p = self.postfix("stop")
            pidf = self.queue / "pid" / "master.pid"
            deadline = time.monotonic() + 20
            while pidf.exists() and time.monotonic() < deadline:
                try:
                    pid = int(pidf.read_text().strip())
                    os.kill(pid, 0)
                except (ValueError, ProcessLookupError, FileNotFoundError):
                    break
                time.sleep(0.2)
            self.started = False
            return p.returncode
        return 0

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def delivered(self, qid_pattern=r"status=sent"):
        return re.findall(qid_pattern, self.log())


if __name__ == "__main__":
    import smtplib
    import sys
    sink = int(sys.argv[1])
    pf = Postfix({"test.example": f"smtp:[127.0.0.1]:{sink}"}).start()
    print("postfix smtpd on", pf.port, "dir", pf.root)
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
        print(s.sendmail("a@client.test.example", ["b@test.example"],
                         b"Subject: via postfix\r\n\r\nhello\r\n"))
    time.sleep(5)
    print(pf.log())
    pf.cleanup()
