"""`mxgate demo`: the guide's story told with real SMTP sessions on loopback, in one process.

Owns: the narration — a sample organisation (Contoso behind the "Third-party filter service"),
a loopback DNS server with the sender domains' records, one node running the gateway and the
mailbox server, and each step as a real session whose replies are printed. Every policy change
goes through the same store and edit path as the CLI. Must not hold mail-flow logic of its own.

Loopback hosts: 127.0.0.77 an Internet sender, 127.0.0.66 a spammer who learnt the mailbox
server's address, 127.0.0.10 the gateway's relay address.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mxgate.config.home import Home
from mxgate.config.node import MailboxSection, load_settings
from mxgate.devtools.dnsserver import TestDNSServer
from mxgate.policy import edit
from mxgate.policy.document import load_toml
from mxgate.probe.client import ProbeOptions, ProbeResult, run_probe
from mxgate.server.node import Node
from mxgate.store.db import open_engine
from mxgate.store.policy_store import PolicyStore

INTERNET, ATTACKER, GATEWAY = "127.0.0.77", "127.0.0.66", "127.0.0.10"
MARKER = ".mxgate-demo"

START_POLICY = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"

[[accepted_domain]]
name = "contoso.test"

[[mailbox]]
address = "alice@contoso.test"
forward_to = ["bob@contoso.test"]
keep_copy = true

[[mailbox]]
address = "bob@contoso.test"
"""

CONNECTOR = {
    "name": "Third-party filter service", "type": "partner", "sender_domains": ["*"],
    "sender_ip_addresses": [GATEWAY, "::1"], "restrict_domains_to_ip_addresses": True, "require_tls": True,
    "comment": "The mail security gateway: the only anonymous sender this server accepts.",
}


@dataclass
class Step:
    title: str
    ok: bool
    detail: str


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def prepare_home(path: Path) -> Home:
    """A fresh demo home each run; refuse to wipe a directory the demo did not create."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise SystemExit(f"{path} exists and is not a demo home; choose another --home")
        shutil.rmtree(path)
    home = Home.open(path)
    (path / MARKER).write_text("created by mxgate demo; safe to delete\n")
    return home


class Demo:
    def __init__(self, home: Home, say: Callable[[str], None], admin: bool):
        self.home, self.say, self.admin = home, say, admin
        self.steps: list[Step] = []
        self.dns = TestDNSServer()
        self.node: Node | None = None

    # --- set-up ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.dns.add("northwind.test", "MX", "10 mx.northwind.test.")
        self.dns.add("fabrikam.test", "TXT", f"v=spf1 ip4:{INTERNET} -all")
        self.dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=quarantine")
        engine = open_engine(self.home.database_url)
        PolicyStore(engine).save(load_toml(START_POLICY), actor="demo", summary="Contoso before the lock-down")
        engine.dispose()
        mailbox_port, gateway_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.mailbox_port, self.gateway_port = mailbox_port, gateway_port
        non_routable = [n for n in MailboxSection().non_routable if n != "127.0.0.0/8"]
        overrides = {
            "roles.mailbox": True, "roles.gateway": True, "roles.submission": False, "roles.admin": self.admin,
            "mailbox.listen": [f"127.0.0.1:{mailbox_port}", f"[::1]:{mailbox_port}"],
            "mailbox.hostname": "mx.contoso.test",
            # The loopback "Internet" sender must count as external for enhanced filtering.
            "mailbox.non_routable": non_routable,
            "gateway.listen": [f"127.0.0.1:{gateway_port}"], "gateway.hostname": "gw.contoso.test",
            "gateway.downstream": [f"127.0.0.1:{mailbox_port}"], "gateway.source_address": GATEWAY,
            "gateway.retry_first": 1.0, "gateway.queue_scan_interval": 0.2,
            "dns.servers": [self.dns.address], "dns.timeout": 2.0,
        }
        if self.admin:
            overrides["admin.listen"] = f"127.0.0.1:{free_port('127.0.0.1')}"
        self.node = Node(load_settings(None, overrides), self.home)
        await self.node.start()
        g = self.node.settings.gateway
        self.dns.add(f"{g.arc_selector}._domainkey.{g.arc_domain}", "TXT",
                     (self.home.keys / f"arc-{g.arc_selector}.txt").read_text().strip())

    async def stop(self) -> None:
        if self.node:
            await self.node.stop(deadline=2.0)
        self.dns.close()

    # --- narration helpers ----------------------------------------------------------------
    def heading(self, n: int, text: str) -> None:
        self.say(f"\n── Step {n}: {text}")

    def record(self, title: str, ok: bool, detail: str) -> None:
        self.steps.append(Step(title, ok, detail))
        self.say(f"   {'✔' if ok else '✘'} {detail}")

    async def session(self, *, source: str, port: int, sender: str, rcpt: str, send: bool, subject: str = "",
                      starttls: str = "auto") -> ProbeResult:
        opts = ProbeOptions(host="127.0.0.1", port=port, mail_from=sender, rcpt_to=(rcpt,), send=send,
                            ehlo="sender.example" if source != GATEWAY else "gw.contoso.test", starttls=starttls,
                            source_address=source, subject=subject or "mxgate demo", timeout=10.0)
        result = await run_probe(opts)
        self.say(f"   SMTP session from {source} to 127.0.0.1:{port}:")
        for line in result.transcript:
            if line.direction == "C" and (line.text.startswith(("From:", "To:", "Date:", "Message-ID:", "MIME", "Content"))
                                          or line.text == "" or not line.text.isascii()):
                continue
            if line.direction in ("C", "S"):  # multi-line replies (EHLO) whole: every line is part of the reply
                self.say(f"     {line.direction}: {line.text}")
        return result

    def change_policy(self, fn, summary: str) -> int:
        store = self.node.policy_store
        current = store.current()
        saved = store.save(fn(current.policy), actor="demo", summary=summary, base_version=current.version)
        return saved.version

    async def wait_enforced(self, version: int) -> float:
        start = time.monotonic()
        while self.node.watcher.current.version < version:
            await asyncio.sleep(0.02)
        return time.monotonic() - start

    def maildir(self, address: str, folder: str | None = None) -> list[bytes]:
        base = self.home.maildir / address / (f".{folder}" if folder else "") / "new"
        return [p.read_bytes() for p in sorted(base.iterdir())] if base.exists() else []

    async def wait_for_mail(self, address: str, count: int, *folders: str | None, timeout: float = 30) -> bool:
        """Until the folders (default: the inbox) hold `count` messages together."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(len(self.maildir(address, f)) for f in folders or (None,)) >= count:
                return True
            await asyncio.sleep(0.1)
        return False

    # --- the story ------------------------------------------------------------------------
    async def run(self) -> bool:
        self.heading(1, "before the lock-down, anyone who knows the mailbox server's address can skip the gateway")
        r = await self.session(source=ATTACKER, port=self.mailbox_port, sender="ceo@bank.example",
                               rcpt="alice@contoso.test", send=True, subject="urgent wire transfer")
        self.record("bypass before lock-down", r.outcome == "accept",
                    f"the spammer's message was accepted ({r.code}) — this is the problem the guide solves")

        self.heading(2, "create the partner inbound connector for the gateway (mail flow → connectors → add)")
        version = self.change_policy(lambda p: edit.add(p, "inbound_connector", CONNECTOR), "lock-down connector")
        elapsed = await self.wait_enforced(version)
        self.record("connector created", True, f"policy version {version}: 'Third-party filter service', sender domains *, "
                    f"restricted to {GATEWAY} and ::1, TLS required — enforced after {elapsed * 1000:.0f} ms")

        self.heading(3, "the same direct attempt is now refused")
        r = await self.session(source=ATTACKER, port=self.mailbox_port, sender="ceo@bank.example",
                               rcpt="alice@contoso.test", send=True, subject="urgent wire transfer")
        self.record("bypass refused", r.outcome == "reject" and r.enhanced == "5.7.51" and r.stage == "rcpt",
                    f"refused at {r.stage.upper()} with {r.code} {r.enhanced} TenantInboundAttribution")

        self.heading(4, "mail from the Internet through the gateway (the MX) is delivered")
        before = len(self.maildir("alice@contoso.test"))
        r = await self.session(source=INTERNET, port=self.gateway_port, sender="partner@northwind.test",
                               rcpt="alice@contoso.test", send=True, subject="quarterly report")
        arrived = r.outcome == "accept" and await self.wait_for_mail("alice@contoso.test", before + 1)
        self.record("gateway path", arrived, "the gateway checked it and relayed it over TLS from "
                    f"{GATEWAY} before its 250 (cut-through); it is in alice's Maildir")

        self.heading(5, "enhanced filtering: judge SPF and DMARC on the real sender, not on the gateway")
        self.say(f"   fabrikam.test publishes SPF 'ip4:{INTERNET} -all' and DMARC p=quarantine.")
        junk_before = len(self.maildir("alice@contoso.test", "Junk"))
        await self.session(source=INTERNET, port=self.gateway_port, sender="organizer@fabrikam.test",
                           rcpt="alice@contoso.test", send=True, subject="without enhanced filtering")
        junked = await self.wait_for_mail("alice@contoso.test", junk_before + 1, "Junk")
        self.record("without enhanced filtering", junked,
                    f"SPF was judged on the gateway's address {GATEWAY} → fail → DMARC quarantine → Junk folder")
        version = self.change_policy(
            lambda p: edit.change(p, "inbound_connector", CONNECTOR["name"], {"ef_skip_last_ip": True}),
            "enhanced filtering: skip the last IP")
        await self.wait_enforced(version)
        inbox_before = len(self.maildir("alice@contoso.test"))
        await self.session(source=INTERNET, port=self.gateway_port, sender="organizer@fabrikam.test",
                           rcpt="alice@contoso.test", send=True, subject="with enhanced filtering")
        arrived = await self.wait_for_mail("alice@contoso.test", inbox_before + 1)
        # By subject, not by position: Maildir names sort by time only to the second.
        latest = next((m for m in self.maildir("alice@contoso.test") if b"Subject: with enhanced filtering" in m), b"")
        results = _header(latest, b"Authentication-Results")
        ok = arrived and b"spf=pass" in results and INTERNET.encode() in latest and b"dmarc=pass" in results
        self.record("with enhanced filtering", ok, f"policy version {version}: the walk skipped {GATEWAY} and found "
                    f"{INTERNET}; Authentication-Results: {results.decode(errors='replace')}")

        self.heading(6, "internal mail keeps flowing: alice forwards to bob inside the server")
        # Every copy counts, the Junk folder's too: bob must hold one forwarded copy per message alice got.
        alice = {f: len(self.maildir("alice@contoso.test", f)) for f in (None, "Junk")}
        total = sum(alice.values())
        await self.wait_for_mail("bob@contoso.test", total, None, "Junk")
        bob = {f: len(self.maildir("bob@contoso.test", f)) for f in (None, "Junk")}
        self.record("internal forward", bob == alice,
                    f"alice received {total} messages ({alice['Junk']} in Junk); bob has {sum(bob.values())} "
                    f"forwarded copies ({bob['Junk']} in Junk) — delivered inside the process, never through "
                    "the locked listener")

        self.heading(7, "the admin's proof: the lock-down verifier")
        from mxgate.probe.verify import Target, VerifySettings, failed, plan_matrix, render_table, run_matrix

        vs = VerifySettings(target=Target("127.0.0.1", self.mailbox_port), target6=Target("::1", self.mailbox_port),
                            attacker=ATTACKER, timeout=10.0)
        rows = await run_matrix(plan_matrix(self.node.watcher.current.policy, vs))
        self.say(render_table(rows))
        self.record("verifier", not failed(rows), "every row passed" if not failed(rows) else "a row failed")
        return all(s.ok for s in self.steps)

    def where(self) -> str:
        prog = command_name()
        lines = ["", "Where things are:",
                 f"  message trace:  {prog} --home {self.home.root} trace",
                 f"  Maildirs:       {self.home.maildir}",
                 f"  policy:         {prog} --home {self.home.root} policy export"]
        for extra in self.node.extras:
            if getattr(extra, "role_name", None) == "admin":
                lines.append(f"  admin centre:   {extra.addresses[0]} (user 'admin'; password printed above)")
        return "\n".join(lines)


def command_name(argv0: str | None = None, path: str | None = None) -> str:
    """How to type mxgate in another shell: `mxgate` when that is what PATH finds, else the
    script's full path (the README's quick start runs .venv/bin/mxgate, not on PATH)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    script = Path(argv0)
    if script.name != "mxgate":
        return f"{sys.executable} -m mxgate"
    found = shutil.which("mxgate", path=path)
    if found and Path(found).resolve() == script.resolve():
        return "mxgate"
    return str(script.absolute())


def _header(message: bytes, name: bytes) -> bytes:
    for line in message.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ").split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line[len(name) + 1:].strip()
    return b""


async def run_demo(home_path: Path, keep_running: bool, say: Callable[[str], None]) -> int:
    home = prepare_home(home_path)
    demo = Demo(home, say, admin=keep_running)
    say("mxgate demo — the partner-connector lock-down, end to end on loopback")
    try:
        await demo.start()
        ok = await demo.run()
        say(demo.where())
        say(f"\n{'All steps behaved as the guide says.' if ok else 'Some steps did not behave as expected.'}")
        if keep_running:
            say("The node keeps running (Ctrl-C to stop).")
            await demo.node.run_until_stopped()
            demo.node = None
        return 0 if ok else 1
    finally:
        await demo.stop()
