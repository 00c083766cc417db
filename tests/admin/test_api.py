"""Issue 11 must-show 1: the REST API for every resource, on a real node over loopback HTTP.
Writes take the CLI's path, so a refused change carries the CLI's exact message."""

from __future__ import annotations

import asyncio
import time

import pytest
from typer.testing import CliRunner

import rig
from adminkit import api_client, login
from mxgate.cli import _register_all, app as cli_app
from rig import ATTACKER, GATEWAY, maildir_messages, send_message, simple_message

GUIDE = "Third-party filter service"


def test_accepted_domains_crud(api):
    assert [d["name"] for d in api.get("/domains").json()] == ["contoso.test"]
    r = api.post("/domains", json={"name": "fabrikam.example", "type": "internal_relay"})
    assert r.status_code == 201 and r.json()["object"]["type"] == "internal_relay"
    assert r.json()["version"] == 2 and "accepted domain" in r.json()["summary"]
    assert api.get("/domains/FABRIKAM.example").json()["name"] == "fabrikam.example"
    assert api.patch("/domains/fabrikam.example", json={"match_subdomains": True}).json()["object"]["match_subdomains"] is True
    assert api.delete("/domains/fabrikam.example").status_code == 200
    assert api.get("/domains/fabrikam.example").status_code == 404


def test_mailboxes_crud(api):
    r = api.post("/mailboxes", json={"address": "carol@contoso.test", "aliases": ["c@contoso.test"]})
    assert r.status_code == 201 and r.json()["object"]["aliases"] == ["c@contoso.test"]
    assert "carol@contoso.test" in [m["address"] for m in api.get("/mailboxes").json()]
    assert api.patch("/mailboxes/carol@contoso.test", json={"aliases": []}).json()["object"]["aliases"] == []
    assert api.delete("/mailboxes/carol@contoso.test").status_code == 200
    assert api.get("/mailboxes/carol@contoso.test").json() == {"error": "mailbox 'carol@contoso.test' does not exist"}


def test_inbound_and_outbound_connectors_crud(api):
    [c] = api.get("/connectors/inbound").json()
    assert c["name"] == GUIDE and c["restrict_domains_to_ip_addresses"] is True
    r = api.post("/connectors/inbound", json={"name": "Printers", "type": "on_premises", "sender_ip_addresses": ["127.0.0.30"],
                                               "require_tls": False})
    assert r.status_code == 201, r.text
    assert api.patch("/connectors/inbound/printers", json={"comment": "floor 2"}).json()["object"]["comment"] == "floor 2"
    assert api.delete("/connectors/inbound/Printers").status_code == 200
    r = api.post("/connectors/outbound", json={"name": "To gateway", "recipient_domains": ["*"], "smart_hosts": ["127.0.0.10:2526"]})
    assert r.status_code == 201, r.text
    assert [o["name"] for o in api.get("/connectors/outbound").json()] == ["To gateway"]
    assert api.delete("/connectors/outbound/To gateway").status_code == 200


def test_certificate_pin_pasted_in_another_spelling_is_shown_canonical(admin_node, api, test_ca):
    """Issue 22: the admin API stores and shows the one canonical pin form, whatever was pasted."""
    import base64

    from mxgate.server.tls import spki_sha256_of_file

    pin = spki_sha256_of_file(test_ca["gateway.partner.test"][0])
    pasted = [base64.b64encode(bytes.fromhex(pin)).decode(), "sha256:" + ":".join(pin[i:i + 2] for i in range(0, 64, 2)).upper()]
    r = api.post("/connectors/inbound", json={"name": "By certificate", "sender_domains": ["partner.test"],
                                               "restrict_domains_to_certificate": True,
                                               "tls_sender_certificate_name": "gateway.partner.test",
                                               "tls_sender_certificate_fingerprints": pasted})
    assert r.status_code == 201, r.text
    assert api.get("/connectors/inbound/By certificate").json()["tls_sender_certificate_fingerprints"] == [pin]
    page = login(admin_node.admin_url).get("/connectors").text
    assert pin in page and pasted[0] not in page  # the admin centre shows the canonical form too


def test_enhanced_filtering_modes(api):
    url = f"/connectors/inbound/{GUIDE}/enhanced-filtering"
    assert api.get(url).json() == {"mode": "off", "skip_ips": [], "scope": "organization", "users": [], "test_mode": False}
    assert api.put(url, json={"mode": "skip_last_ip"}).status_code == 200
    assert api.get(f"/connectors/inbound/{GUIDE}").json()["ef_skip_last_ip"] is True
    r = api.put(url, json={"mode": "skip_ips", "skip_ips": ["127.0.0.10", "2001:db8::/48"], "scope": "users",
                           "users": ["alice@contoso.test"]})
    assert r.status_code == 200
    c = api.get(f"/connectors/inbound/{GUIDE}").json()
    assert (c["ef_skip_last_ip"], c["ef_skip_ips"], c["ef_users"]) == (False, ["127.0.0.10", "2001:db8::/48"], ["alice@contoso.test"])
    bad = api.put(url, json={"mode": "skip_ips", "skip_ips": []})
    assert bad.status_code == 422 and "skip_ips needs at least one address" in bad.json()["error"]
    bad = api.put(url, json={"mode": "skip_ips", "skip_ips": ["10.0.0.300"]})
    assert bad.status_code == 422 and "ef_skip_ips" in bad.json()["error"]
    assert api.put(url, json={"mode": "off"}).json()["object"]["ef_skip_ips"] == []


def test_policy_versions_and_diff(api):
    api.post("/domains", json={"name": "woodgrove.test"})
    versions = api.get("/policy/versions").json()
    assert [v["version"] for v in versions] == [2, 1] and versions[0]["actor"] == "api:tests"
    assert 'name = "woodgrove.test"' in api.get("/policy/versions/2").json()["toml"]
    d = api.get("/policy/diff", params={"old": 1}).json()
    assert (d["old"], d["new"]) == (1, 2) and '+name = "woodgrove.test"' in d["diff"]
    assert api.get("/policy/versions/9").status_code == 404


def test_a_patch_that_changes_nothing_stores_no_version(api):
    """As PUT /policy with the document in force: a PATCH with the values in force is "no change"
    at the version in force, not a new version every node loads (session 10, from outside)."""
    before = api.get(f"/connectors/inbound/{GUIDE}").json()
    for _ in range(2):
        r = api.patch(f"/connectors/inbound/{GUIDE}", json={"require_tls": before["require_tls"]})
        assert r.status_code == 200 and (r.json()["version"], r.json()["summary"]) == (1, "no change"), r.text
        assert r.json()["object"] == before
    assert [v["version"] for v in api.get("/policy/versions").json()] == [1]
    r = api.patch(f"/connectors/inbound/{GUIDE}", json={"comment": "changed"})
    assert r.json()["version"] == 2 and r.json()["object"]["comment"] == "changed"


def test_a_patch_that_renames_answers_with_the_renamed_object(api):
    """PATCH /mailboxes/alice@... {"address": "zed@..."} stored the rename, then looked the answer
    up under the old name and said 404 "does not exist": a client retrying found its change made
    (session 10, from outside). The answer is the object under its new name."""
    r = api.patch("/mailboxes/bob@contoso.test", json={"address": "robert@contoso.test"})
    assert r.status_code == 200 and r.json()["object"]["address"] == "robert@contoso.test", r.text
    assert api.get("/mailboxes/robert@contoso.test").status_code == 200
    assert api.get("/mailboxes/bob@contoso.test").status_code == 404
    r = api.patch(f"/connectors/inbound/{GUIDE}", json={"name": "Gateway"})
    assert r.status_code == 200 and r.json()["object"]["name"] == "Gateway", r.text
    assert [v["version"] for v in api.get("/policy/versions").json()] == [3, 2, 1]


def test_credential_fields_of_the_wrong_type_or_name_are_422(api):
    """POST /credentials {"name": ["x"]} created a login named "['x']" (the value went through
    str()); a number as a password was taken as its digits; an unknown key was ignored. Each is a
    422 naming the field now, and nothing is stored (session 10, from outside)."""
    for body in ({"name": ["x"], "address": "alice@contoso.test"}, {"name": "x", "address": 5},
                 {"name": "x", "address": "alice@contoso.test", "description": None},
                 {"name": "x", "address": "alice@contoso.test", "secret": "mine"}):
        r = api.post("/credentials", json=body)
        assert r.status_code == 422 and r.json()["error"].split(":")[0] in body, (body, r.text)
    assert api.get("/credentials").json() == []
    for body in ({"password": 12345678901234}, {"password": ["long enough pass"]}, {"pasword": "long enough pass"}):
        r = api.put("/mailboxes/alice@contoso.test/password", json=body)
        assert r.status_code == 422 and r.json()["error"].split(":")[0] in body, (body, r.text)
    assert api.get("/credentials").json() == []


def test_policy_history_with_a_limit_past_the_database_range(api):
    assert [v["version"] for v in api.get("/policy/versions", params={"limit": 2**64}).json()] == [1]
    assert api.get("/policy/versions", params={"limit": -1}).json() == []


def test_unknown_paths_and_wrong_methods_answer_in_the_apis_error_shape(admin_node, api):
    """Every API error is {"error": ...}, but the router's own 404 and 405 came as FastAPI's
    {"detail": ...} (its handler was registered for FastAPI's HTTPException only, and the router
    raises Starlette's): a client reading "error" found nothing. A logged-in page user got that
    JSON too, instead of the error page."""
    r = api.put("/connectors/inbound", json={})
    assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"} and "GET" in r.headers["allow"]
    r = api.get("/no/such/resource")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    page = login(admin_node.admin_url).get("/no/such/page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


def test_ids_beyond_the_database_range_are_404_not_500(admin_node, api):
    """An id past SQL BIGINT (2**63) names no row: 404 with the usual JSON error, never a 500
    from the driver refusing to bind it (session 10, from outside); the page says 404 too."""
    big = 2**63
    r = api.get(f"/trace/{big}")
    assert r.status_code == 404 and r.json() == {"error": f"trace row {big} does not exist"}
    for url, params in ((f"/policy/versions/{big}", None), ("/policy/diff", {"old": big}),
                        ("/policy/diff", {"old": 1, "new": big}), (f"/policy/versions/{-big - 1}", None)):
        r = api.get(url, params=params)
        assert r.status_code == 404 and "does not exist" in r.json()["error"], (url, params, r.text)
    assert login(admin_node.admin_url).get(f"/trace/{big}").status_code == 404


# The CLI and the API refuse the same changes with the same words (one code path).
CASES = [
    (["connector", "new", "X", "--sender-domains", "*", "--restrict-domains-to-ip-addresses"],
     ("post", "/connectors/inbound", {"name": "X", "sender_domains": ["*"], "restrict_domains_to_ip_addresses": True})),
    (["connector", "new", GUIDE, "--sender-domains", "*"],
     ("post", "/connectors/inbound", {"name": GUIDE, "sender_domains": ["*"]})),
    (["connector", "new", "Y", "--sender-domains", "*", "--sender-ip", "10.0.0.0/33"],
     ("post", "/connectors/inbound", {"name": "Y", "sender_domains": ["*"], "sender_ip_addresses": ["10.0.0.0/33"]})),
    (["connector", "set", GUIDE, "--restrict-domains-to-certificate", "--tls-sender-certificate-name", "gw.example"],
     ("patch", f"/connectors/inbound/{GUIDE}", {"restrict_domains_to_certificate": True, "tls_sender_certificate_name": "gw.example"})),
    (["connector", "set", GUIDE, "--associated-accepted-domains", "nowhere.test"],
     ("patch", f"/connectors/inbound/{GUIDE}", {"associated_accepted_domains": ["nowhere.test"]})),
    (["connector", "remove", "Nope"], ("delete", "/connectors/inbound/Nope", None)),
]


@pytest.mark.parametrize("argv,request_", CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)])
def test_validation_errors_identical_to_cli(admin_node, api, argv, request_):
    _register_all()
    cli = CliRunner().invoke(cli_app, ["--home", str(admin_node.home.root), *argv])
    assert cli.exit_code in (1, 2), cli.output
    method, url, body = request_
    r = api.request(method.upper(), url, json=body)
    assert r.status_code == (422 if cli.exit_code == 2 else 404)
    assert cli.stderr.strip() == f"error: {r.json()['error']}"
    assert api.get("/policy/versions").json()[0]["version"] == 1  # nothing stored by either


def test_body_must_be_an_object_and_fields_known(api):
    r = api.post("/domains", json=["contoso.test"])
    assert r.status_code == 422 and r.json()["error"] == "request body: expected a JSON object, got list"
    r = api.post("/domains", json={"name": "x.test", "colour": "blue"})
    assert r.status_code == 422 and "unknown key 'colour'" in r.json()["error"]


def test_trace_search_and_detail(admin_node, api):
    send_message("127.0.0.1", admin_node.port(), source=GATEWAY, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                 data=simple_message(subject="api trace"))
    send_message("127.0.0.1", admin_node.port(), source=ATTACKER, sender="s@fabrikam.test", rcpts=["bob@contoso.test"],
                 data=simple_message())
    admin_node.trace.flush()
    [row] = api.get("/trace", params={"status": "Delivered"}).json()
    assert (row["subject"], row["from_ip"], row["connector"]) == ("api trace", GATEWAY, GUIDE)
    [refused] = api.get("/trace", params={"ip": ATTACKER}).json()
    assert refused["status"] == "Rejected" and refused["reason"] == "connector-attribution"
    detail = api.get(f"/trace/{row['id']}").json()
    assert [e["event"] for e in detail["events"]] == ["Receive", "Deliver"]
    assert detail["stored"]["received"][0]["ours"] and detail["stored"]["received"][0]["ip"] == GATEWAY
    assert api.get("/trace", params={"status": "Lost"}).json()["error"].startswith("status: must be one of")
    assert api.get("/trace", params={"since": "yesterday"}).status_code == 422


def test_quarantine_list_preview_release_delete(admin_node, api):
    from mxgate.quarantine.store import QuarantineStore

    store = QuarantineStore(admin_node.node.engine, node="t")
    body = simple_message(subject="held for review")
    qid = store.add(trace_id="t1", sender="s@fabrikam.test", recipients=["alice@contoso.test"], subject="held for review",
                    reason="dmarc-policy", body=body)
    other = store.add(trace_id="t2", sender="s@fabrikam.test", recipients=["bob@contoso.test"], subject="junk",
                      reason="dmarc-policy", body=body)
    assert {q["id"] for q in api.get("/quarantine").json()} == {qid, other}
    preview = api.get(f"/quarantine/{qid}").json()
    assert preview["subject"] == "held for review" and "Hello." in preview["body_preview"] and "body" not in preview
    assert api.post(f"/quarantine/{qid}/release").json() == {"released": qid, "delivered": 1}
    [stored] = maildir_messages(admin_node.home, "alice@contoso.test")
    assert stored == body
    again = api.post(f"/quarantine/{qid}/release")
    assert again.status_code == 409 and "already released" in again.json()["error"]
    assert api.delete(f"/quarantine/{other}").json() == {"deleted": other}
    assert api.get("/quarantine").json() == []
    assert api.get("/quarantine/../../etc").status_code == 404


def test_queue_list_retry_delete(admin_node, api):
    from mxgate.durable import GroupCommitter
    from mxgate.queue.spool import DiskSpool

    async def enqueue():
        committer = GroupCommitter()
        committer.start()
        spool = DiskSpool.open(admin_node.home.spool / "gateway", committer)
        entry = await spool.enqueue("s@fabrikam.test", ["alice@contoso.test"], simple_message(), {"trace_id": "q1"})
        await committer.aclose()
        return entry

    entry = asyncio.run(enqueue())
    [listed] = api.get("/queue").json()
    assert (listed["queue_id"], listed["sender"], listed["trace_id"]) == (entry.queue_id, "s@fabrikam.test", "q1")
    assert api.post(f"/queue/{entry.queue_id}/retry").status_code == 202
    assert api.delete(f"/queue/{entry.queue_id}").status_code == 202
    requests = admin_node.home.spool / "gateway" / "requests"
    assert sorted(p.name for p in requests.iterdir()) == [f"{entry.queue_id}.delete", f"{entry.queue_id}.retry"]
    assert api.post("/queue/0123456789ABCDEF0123/retry").status_code == 404


def test_queue_view_covers_every_process_spool(admin_node, api):
    """Issue 19: each process of a gateway node queues into its own directory; the admin centre
    lists them all and sends an action to the directory that holds the entry."""
    from mxgate.durable import GroupCommitter
    from mxgate.queue.spool import DiskSpool

    async def enqueue(name: str, subject: str):
        committer = GroupCommitter()
        committer.start()
        spool = DiskSpool.open(admin_node.home.spool / name, committer)
        entry = await spool.enqueue("s@fabrikam.test", ["alice@contoso.test"], simple_message(subject=subject),
                                    {"trace_id": subject})
        await committer.aclose()
        return entry

    first = asyncio.run(enqueue("gateway", "p0"))
    in_worker = asyncio.run(enqueue("gateway-w1", "w1"))
    asyncio.run(enqueue("gateway-outbound-w1", "not the inbound queue"))
    listed = api.get("/queue").json()
    assert [(e["queue_id"], e["spool"]) for e in listed] == [(first.queue_id, "gateway"), (in_worker.queue_id, "gateway-w1")]
    assert api.post(f"/queue/{in_worker.queue_id}/retry").status_code == 202
    assert [p.name for p in (admin_node.home.spool / "gateway-w1" / "requests").iterdir()] == [f"{in_worker.queue_id}.retry"]
    assert not (admin_node.home.spool / "gateway" / "requests").exists()


def test_nodes_lockdown_and_verifier(admin_node, api):
    nodes = api.get("/nodes").json()
    [n] = nodes["nodes"]
    assert n["policy_version"] == nodes["policy_version"] == 1 and n["alive"] and "mailbox" in n["roles"]
    assert api.get("/lockdown").json()["locked_down"] is True
    job = api.post("/verify").json()
    deadline = time.monotonic() + 30
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        job = api.get(f"/jobs/{job['id']}").json()
    assert job["state"] == "done", job
    rows = {r["check"]: r for r in job["result"]["rows"]}
    assert rows["bypass"]["status"] == "pass" and rows["bypass"]["code"] == 550
    assert job["result"]["passed"] is True
    api.patch(f"/connectors/inbound/{GUIDE}", json={"enabled": False})
    lock = api.get("/lockdown").json()
    assert lock["locked_down"] is False and lock["domains"][0]["status"] == "uncovered"


def test_openapi_lists_every_resource(api):
    paths = api.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/domains", "/api/v1/mailboxes/{ident}", "/api/v1/connectors/inbound/{name}/enhanced-filtering",
              "/api/v1/connectors/outbound", "/api/v1/policy/diff", "/api/v1/trace/{row_id}",
              "/api/v1/quarantine/{qid}/release", "/api/v1/queue/{queue_id}/retry", "/api/v1/verify", "/api/v1/nodes"):
        assert p in paths, p


def test_revoked_and_unknown_tokens_are_refused(admin_node):
    from mxgate.admin import auth

    client = api_client(admin_node)
    assert client.get("/domains").status_code == 200
    [info] = [t for t in auth.list_tokens(admin_node.node.engine) if t.name == "tests"]
    assert info.last_used is not None
    auth.revoke_token(admin_node.node.engine, info.id)
    assert client.get("/domains").status_code == 401
    client.headers["Authorization"] = "Bearer mxg_00000000_guess"
    assert client.get("/domains").json() == {"error": "invalid API token"}
