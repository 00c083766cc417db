#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmark use as real peers:
# postfix (interop + benchmark reference), swaks (real SMTP client), clamav-daemon (EICAR scan),
# chromium (admin-centre browser tests), haproxy (PROXY protocol), postgresql (several nodes),
# systemd (`systemd-analyze verify` of the shipped unit), openssl (the SPKI pin pipeline admins paste
# from, tests/policy/test_certificate_pins.py), prometheus (its promtool checks the shipped alert
# rules and their unit tests), python3-venv (scripts/test.sh and the README's quick start install
# into a virtual environment: Debian's Python is PEP 668 "externally managed"), git
# (tests/test_readme.py runs the README in a fresh clone). Also the system account `mxgate-test`
# that tests/server/test_privileges.py drops to.
# Idempotent: packages already present are skipped, so a warm machine spends no time here.
set -euo pipefail
pkgs=(postfix swaks libnet-ssleay-perl libio-socket-ssl-perl clamav-daemon chromium haproxy postgresql systemd openssl prometheus python3-venv git)
if [ "$(id -u)" = 0 ] && ! getent passwd mxgate-test >/dev/null; then
  useradd --system --no-create-home --shell /usr/sbin/nologin mxgate-test
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "postfix postfix/main_mailer_type select Local only" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string mxgate.test" | $SUDO debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The system services these packages start are not used: every test starts its own instance.
for svc in postfix clamav-daemon clamav-freshclam haproxy postgresql prometheus prometheus-node-exporter; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
