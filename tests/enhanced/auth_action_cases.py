"""Golden cases for `decide_auth_action`: (name, dmarc result, disposition, arc status, sealers,
trusted sealers, reject action, quarantine action, internal) → (action, reason). `RECORDED`
gives, per case name, what the latest sealer's ARC-Authentication-Results says (default
`EVIDENCE`, an aligned SPF pass for fabrikam.test)."""

DEFAULTS = ("quarantine", "junk")  # the organisation's defaults (policy/model.py)

CASES = [
    # name                              dmarc        disp          arc     sealers                       trusted          actions                  internal  expected
    ("pass delivers",                   "pass",      "none",       "none", (),                           (),              DEFAULTS,                False, ("deliver", "dmarc-pass")),
    ("no record delivers",              "none",      "none",       "none", (),                           (),              DEFAULTS,                False, ("deliver", "dmarc-not-failed")),
    ("temperror never acts",            "temperror", "none",       "none", (),                           (),              ("reject", "reject"),    False, ("deliver", "dmarc-not-failed")),
    ("permerror never acts",            "permerror", "none",       "none", (),                           (),              ("reject", "reject"),    False, ("deliver", "dmarc-not-failed")),
    ("fail under p=none delivers",      "fail",      "none",       "none", (),                           (),              ("reject", "reject"),    False, ("deliver", "dmarc-fail-policy-none")),
    ("p=reject → quarantine",           "fail",      "reject",     "none", (),                           (),              DEFAULTS,                False, ("quarantine", "dmarc-policy")),
    ("p=quarantine → junk",             "fail",      "quarantine", "none", (),                           (),              DEFAULTS,                False, ("junk", "dmarc-policy")),
    ("p=reject → configured reject",    "fail",      "reject",     "none", (),                           (),              ("reject", "junk"),      False, ("reject", "dmarc-policy")),
    ("p=quarantine → configured deliver", "fail",    "quarantine", "none", (),                           (),              ("quarantine", "deliver"), False, ("deliver", "dmarc-policy")),
    ("trusted sealer overrides reject", "fail",      "reject",     "pass", ("lists.test",),              ("Lists.Test.",), DEFAULTS,                False, ("deliver", "arc-trusted-sealer")),
    ("trusted sealer overrides junk",   "fail",      "quarantine", "pass", ("lists.test",),              ("lists.test",), DEFAULTS,                False, ("deliver", "arc-trusted-sealer")),
    ("untrusted sealer does not",       "fail",      "reject",     "pass", ("lists.test",),              ("other.test",), DEFAULTS,                False, ("quarantine", "dmarc-policy")),
    ("broken chain does not",           "fail",      "reject",     "fail", ("lists.test",),              ("lists.test",), DEFAULTS,                False, ("quarantine", "dmarc-policy")),
    ("only the latest sealer counts",   "fail",      "reject",     "pass", ("lists.test", "fwd.test"),   ("lists.test",), DEFAULTS,                False, ("quarantine", "dmarc-policy")),
    ("sealer recorded dmarc=fail",      "fail",      "reject",     "pass", ("lists.test",),              ("lists.test",), DEFAULTS,                False, ("quarantine", "dmarc-policy")),
    ("sealer's checks timed out",       "fail",      "reject",     "pass", ("lists.test",),              ("lists.test",), DEFAULTS,                False, ("quarantine", "dmarc-policy")),
    ("sealer recorded nothing",         "fail",      "reject",     "pass", ("lists.test",),              ("lists.test",), DEFAULTS,                False, ("quarantine", "dmarc-policy")),
    ("sealer's pass is unaligned",      "fail",      "quarantine", "pass", ("lists.test",),              ("lists.test",), DEFAULTS,                False, ("junk", "dmarc-policy")),
    ("sealer's aligned dkim pass",      "fail",      "reject",     "pass", ("lists.test",),              ("lists.test",), DEFAULTS,                False, ("deliver", "arc-trusted-sealer")),
    ("on-premises is internal",         "fail",      "reject",     "none", (),                           (),              ("reject", "reject"),    True,  ("deliver", "internal-on-premises")),
]

EVIDENCE = "spf=pass smtp.mailfrom=bounces@fabrikam.test"
RECORDED = {
    "sealer recorded dmarc=fail": "spf=pass smtp.mailfrom=fabrikam.test; dmarc=fail header.from=fabrikam.test",
    "sealer's checks timed out": "spf=temperror smtp.mailfrom=fabrikam.test; dmarc=temperror header.from=fabrikam.test",
    "sealer recorded nothing": None,
    "sealer's pass is unaligned": "spf=pass smtp.mailfrom=bulk-esp.test; dkim=pass header.d=bulk-esp.test",
    "sealer's aligned dkim pass": "dkim=pass header.d=fabrikam.test header.s=sel; spf=fail smtp.mailfrom=x.test",
}
