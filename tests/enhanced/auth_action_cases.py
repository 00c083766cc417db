"""Golden cases for `decide_auth_action`: (name, dmarc result, disposition, arc status, sealers,
trusted sealers, reject action, quarantine action, internal) → (action, reason)."""

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
    ("on-premises is internal",         "fail",      "reject",     "none", (),                           (),              ("reject", "reject"),    True,  ("deliver", "internal-on-premises")),
]
