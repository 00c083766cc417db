"""The loopback DNS server lives in the package (the demo and the benchmark use it too)."""

from mxgate.devtools.dnsserver import *  # noqa: F401,F403
from mxgate.devtools.dnsserver import TestDNSServer  # noqa: F401
