"""The test Postfix lives in the package (mxgate.devtools.postfix); the benchmark uses it too."""

from mxgate.devtools.postfix import *  # noqa: F401,F403
from mxgate.devtools.postfix import BASE_MASTER_CF, PostfixInstance, base_main_cf, smtpd_service, wait_smtp  # noqa: F401
