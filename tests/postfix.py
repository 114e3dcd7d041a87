"""A private Debian postfix for tests: its own config, queue and data directories in a temp
folder, smtpd on a free 127.0.0.1 port with STARTTLS and a self-signed certificate, and every
mail for example.com delivered to one Maildir in that folder. Nothing of the system's postfix
(/etc/postfix, the system queue, port 25) is read or touched.

Needs root (postfix's master runs as root and drops to the `postfix` user) and the postfix
package: `bin/setup test` installs it; `PrivatePostfix.unavailable()` says why it cannot run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import cast

from jobkit.testing_services import wait_until

MASTER = "/usr/lib/postfix/sbin/master"
DOMAIN = "example.com"
CERT_NAME = "localhost"

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-test.localdomain
mydomain = localdomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = $myhostname ESMTP
smtpd_tls_cert_file = {root}/cert.pem
smtpd_tls_key_file = {root}/key.pem
smtpd_tls_security_level = may
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
maillog_file_prefixes = {root}
maillog_file = {root}/postfix.log
alias_maps =
alias_database =
biff = no
"""

# Only the services local delivery needs, none chrooted (a chroot would need copies of /etc).
_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PrivatePostfix:
    """`start()` / `stop()`; `port`, `cert` (the self-signed certificate, a CA file for
    `mailer.ca_file`), `delivered()` (the messages in the Maildir so far)."""

    def __init__(self) -> None:
        # Its own folder in /tmp, open to traverse: the master opens data/ as the `postfix`
        # user and the virtual agent writes the Maildir as `nobody` (pytest's tmp is 0700).
        self.root = Path(tempfile.mkdtemp(prefix="jobkit-postfix-"))
        self.port = 0
        self.master: subprocess.Popen | None = None

    @staticmethod
    def unavailable() -> str | None:
        """Why a private postfix cannot run here, or None."""
        if os.geteuid() != 0:
            return "needs root: postfix's master starts as root"
        if not Path(MASTER).exists() or shutil.which("postfix") is None:
            return "postfix is not installed (bin/setup test installs it)"
        if shutil.which("openssl") is None:
            return "openssl is not installed"
        try:
            pwd.getpwnam("postfix")
        except KeyError:
            return "no `postfix` user (reinstall the postfix package)"
        return None

    @property
    def cert(self) -> str:
        return str(self.root / "cert.pem")

    @property
    def maildir(self) -> Path:
        return self.root / "maildir"

    def start(self) -> None:
        self.root.chmod(0o755)  # postfix refuses a config directory others can write
        self_signed_certificate(self.root)
        nobody = pwd.getpwnam("nobody")
        for sub in ("new", "cur", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        for path in (self.maildir, *(self.maildir / s for s in ("new", "cur", "tmp"))):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.port = _free_port()
        (self.root / "main.cf").write_text(_MAIN_CF.format(
            root=self.root, domain=DOMAIN, uid=nobody.pw_uid, gid=nobody.pw_gid))
        (self.root / "master.cf").write_text(_MASTER_CF.format(port=self.port))
        postfix = pwd.getpwnam("postfix")
        (self.root / "spool").mkdir(exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        os.chown(self.root / "data", postfix.pw_uid, postfix.pw_gid)
        env = {**os.environ, "MAIL_CONFIG": str(self.root)}
        # `postfix check` creates the queue and data directories with postfix's ownership.
        subprocess.run(["postfix", "-c", str(self.root), "check"], check=True, env=env,
                       capture_output=True)
        self.master = subprocess.Popen([MASTER, "-c", str(self.root), "-d"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       start_new_session=True)
        wait_until(self._listening, timeout=20, what=f"postfix smtpd on port {self.port}; "
                   f"log: {self.log()[-1500:]}")

    def _listening(self) -> bool:
        if self.master is not None and self.master.poll() is not None:
            stderr = self.master.stderr.read().decode() if self.master.stderr else ""
            raise RuntimeError(f"postfix master exited {self.master.returncode}: {stderr}"
                               f"\n{self.log()[-1500:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                return conn.recv(64).startswith(b"220")
        except OSError:
            return False

    def log(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else "(no log yet)"

    def delivered_bytes(self) -> list[bytes]:
        """Each mail in the Maildir as postfix stored it (LF line ends, its own trace
        headers on top)."""
        return [path.read_bytes() for path in sorted((self.maildir / "new").iterdir())]

    def delivered(self) -> list[EmailMessage]:
        parser = BytesParser(policy=policy.default)
        return [cast(EmailMessage, parser.parsebytes(raw)) for raw in self.delivered_bytes()]

    def stop(self) -> None:
        """SIGTERM to the master we started (by its PID): it stops its own children; then
        the folder goes."""
        if self.master is not None:
            self.master.terminate()
            try:
                self.master.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.master.pid, 9)
                self.master.wait(5)
            self.master = None
        shutil.rmtree(self.root, ignore_errors=True)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """cert.pem and key.pem in `folder`: a self-signed certificate for localhost, which is
    also the CA file that verifies it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={CERT_NAME}", "-addext", f"subjectAltName=DNS:{CERT_NAME}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])
