"""Protocol limits, each with its source. Node settings may lower or raise the tunable ones."""

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
MAX_COMMAND_LINE = 512
# RFC 5321 §4.5.3.1.6 / RFC 5322 §2.1.1: a text line is at most 1000 octets including CRLF.
MAX_TEXT_LINE = 998
# RFC 5321 §4.5.3.1.8: servers must accept at least 100 recipients.
DEFAULT_MAX_RECIPIENTS = 100
# Postfix's message_size_limit default is 10 240 000; we use 10 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
# Postfix header_size_limit is 102 400.
MAX_HEADER_BLOCK = 100 * 1024
# RFC 5321 §6.3: loop detection by counting Received headers; Postfix hopcount_limit is 50.
MAX_RECEIVED_HEADERS = 50
# RFC 5321 §4.5.3.2.7: the server should wait at least 5 minutes for the next command.
COMMAND_TIMEOUT = 300.0
# RFC 5321 §4.5.3.2.6: 10 minutes for data blocks; we enforce a minimum rate instead (slowloris).
MIN_DATA_RATE = 1024  # bytes per second, averaged over the DATA phase after its first 30 s
DATA_RATE_GRACE = 30.0
MAX_SESSION_SECONDS = 3600.0
# Unknown or invalid commands tolerated before 421 (Postfix smtpd_hard_error_limit is 20).
MAX_ERRORS = 10
# Messages held in memory up to this size, then streamed to a spool file.
SPILL_TO_DISK = 1024 * 1024
