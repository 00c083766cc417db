"""Reply bytes are built once per reply (the refusal path's hot loop sends the same few)."""

from mxgate.smtp.replies import REPLIES, Reply


def test_reply_bytes_are_built_once_and_are_exact():
    r = REPLIES["connector-attribution-connect"]
    assert r.render() is r.render()
    assert r.render().startswith(b"554 5.7.51 TenantInboundAttribution;") and r.render().endswith(b"\r\n")
    multi = Reply(250, "", "mx.contoso.test\nPIPELINING\nSTARTTLS")
    assert multi.render() == b"250-mx.contoso.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
    assert str(multi) == "250-mx.contoso.test\r\n250-PIPELINING\r\n250 STARTTLS"
    assert multi == Reply(250, "", "mx.contoso.test\nPIPELINING\nSTARTTLS")  # still a plain value
