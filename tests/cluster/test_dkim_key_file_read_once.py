"""KeyRing.dkim (store/keys.py): the node's `.active` marker and file key are read only to make a
domain's first cluster key, not per signature (issue 19, session 7: every outbound signature
opened the marker). What signs is the store's active key, whatever the marker says afterwards,
and a domain without a key still adopts the selector its marker names."""

from __future__ import annotations

from pathlib import Path

from mxgate.auth.dkim import generate_dkim_key
from mxgate.store.db import migrate, open_engine
from mxgate.store.keys import KeyRing


def test_the_marker_is_read_for_the_first_key_only_and_rotation_still_applies(tmp_path, monkeypatch):
    engine = open_engine(f"sqlite:///{tmp_path / 'k.db'}")
    migrate(engine)
    pem, _txt = generate_dkim_key()
    (tmp_path / "dkim-contoso.test.active").write_text("s2026\n", encoding="ascii")
    (tmp_path / "dkim-contoso.test.s2026.pem").write_bytes(pem)
    now = [1000.0]
    ring = KeyRing(engine, tmp_path, refresh=2.0, clock=lambda: now[0])
    reads = []
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (reads.append(self.name), real_read(self, *a, **k))[1])
    try:
        assert ring.dkim("contoso.test") == ("s2026", pem)  # adopted: the marker's selector and file
        assert reads == ["dkim-contoso.test.active"]
        for _ in range(3):
            now[0] += 5  # past `refresh`: the store is read again, the marker is not
            assert ring.dkim("Contoso.TEST.") == ("s2026", pem)
        assert reads == ["dkim-contoso.test.active"]
        # The marker changing later does not choose the key: the store's active one signs.
        (tmp_path / "dkim-contoso.test.active").write_text("other\n", encoding="ascii")
        now[0] += 5
        assert ring.dkim("contoso.test") == ("s2026", pem)
        rotated = ring.rotate("dkim", "contoso.test")  # a rotation (on any node) applies
        now[0] += 5
        assert ring.dkim("contoso.test")[0] == rotated.selector != "s2026"
        # Another domain without a key: its marker is read, once.
        (tmp_path / "dkim-fabrikam.test.active").write_text("f1\n", encoding="ascii")
        assert ring.dkim("fabrikam.test")[0] == "f1"
        assert ring.dkim("fabrikam.test")[0] == "f1"
        assert reads.count("dkim-fabrikam.test.active") == 1
    finally:
        engine.dispose()
