"""Passive-client scenarios (test-vectors.md "Passive Client Scenarios"; RFC 9420 sections
12.4.2 and 12.4.3.1): join from a Welcome, then follow every epoch's proposals and commit,
checking the epoch_authenticator after the join and after each commit.

Files: passive-client-welcome, passive-client-handling-commit, passive-client-random and
every interop-passive/*.json.

Notes: the interop-passive files predate eternal key-package lifetimes, so lifetimes are not
enforced here (`Group.process(now=...)` enables them).  Their external_senders extensions are
the RFC 9420 section 12.1.8.1 vector ``ExternalSender external_senders<V>``, including an empty
list (extension_data ``00``) and lists whose length needs a 2-byte varint; they decode and
every external-sender proposal signature verifies.  P-521 private keys in
passive-client-welcome sometimes lack their leading zero byte (65 bytes); they are
left-padded to 66 by `KeyPackagePrivate.from_vector`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.vectors.loader import h, load

FILES = [
    "passive-client-welcome",
    "passive-client-handling-commit",
    "passive-client-random",
    "interop-passive/application",
    "interop-passive/branch",
    "interop-passive/commit",
    "interop-passive/external_join",
    "interop-passive/external_proposals",
    "interop-passive/reinit",
    "interop-passive/welcome_join",
]

#: (file, index) -> precise reason; entries listed here are strict xfails.
XFAIL: dict[tuple[str, int], str] = {}


def _params() -> list[Any]:
    out = []
    for name in FILES:
        tag = name.replace("-", "_").replace("/", "_")
        for i, entry in enumerate(load(name)):
            marks = []
            reason = XFAIL.get((name, i))
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            out.append(pytest.param(name, i, id=f"{tag}-{i}-cs{entry['cipher_suite']}", marks=marks))
    return out


def run_passive(entry: dict[str, Any]) -> None:
    from crdt_mls.mls.group import Group, KeyPackagePrivate

    kp = KeyPackagePrivate.from_vector(
        key_package=h(entry["key_package"]),
        init_priv=h(entry["init_priv"]),
        encryption_priv=h(entry["encryption_priv"]),
        signature_priv=h(entry["signature_priv"]),
    )
    psks = {h(p["psk_id"]): h(p["psk"]) for p in entry["external_psks"]}
    tree = h(entry["ratchet_tree"]) if entry.get("ratchet_tree") else None
    group = Group.join_from_welcome(h(entry["welcome"]), kp, ratchet_tree=tree, external_psks=psks)
    assert group.epoch_authenticator == h(entry["initial_epoch_authenticator"])
    for n, epoch in enumerate(entry["epochs"]):
        for proposal in epoch["proposals"]:
            group, _ = group.process(h(proposal))
        group, _ = group.process(h(epoch["commit"]))
        assert group.epoch_authenticator == h(epoch["epoch_authenticator"]), f"epoch step {n}"


@pytest.mark.parametrize(("name", "index"), _params())
def test_passive_client(name: str, index: int) -> None:
    run_passive(load(name)[index])
