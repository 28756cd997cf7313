"""The ``crdt-mls`` CLI (docs/cli.md): a full session in process through `main`, and the
program itself as separate processes (demo, usage errors, a short session)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crdt_mls.cli import Progress, _parse_api, main
from crdt_mls.dag.audit import assert_no_plaintext
from crdt_mls.errors import InvalidArgument
from crdt_mls.stores import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CLI call (in process and in subprocesses) unlocks with this password and
    cheap, test-only scrypt parameters."""
    monkeypatch.setenv("CRDT_MLS_PASSWORD", PASSWORD)
    monkeypatch.setenv("CRDT_MLS_INSECURE_TEST_SCRYPT", "1")


def run(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), *args])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> str:
    code, out, err = run(capsys, data, *args)
    assert code == 0, (args, out, err)
    return out


def test_session_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    A, B, C = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    assert "group created by alice" in ok(capsys, A, "create", "alice")
    ok(capsys, B, "init", "bobby")
    ok(capsys, C, "init", "carol")
    ok(capsys, B, "key-package", "-o", str(tmp_path / "b.kp"))
    ok(capsys, C, "key-package", "-o", str(tmp_path / "c.kp"))
    out = ok(capsys, A, "invite", str(tmp_path / "b.kp"), str(tmp_path / "c.kp"))
    assert "bobby was added" in out and "carol was added" in out and "invitation: bafy" in out
    assert "members: alice, bobby, carol" in ok(capsys, B, "join", "--peer", str(A))
    ok(capsys, C, "join", "--peer", str(A))
    ok(capsys, B, "send", "hello from bobby")
    assert "bobby: hello from bobby" in ok(capsys, A, "sync", "--peer", str(B))
    assert "bobby: hello from bobby" in ok(capsys, C, "sync", "--peer", str(B))
    # share a directory
    docs = tmp_path / "holiday-plans"
    (docs / "inner").mkdir(parents=True)
    (docs / "itinerary.txt").write_text("fly to Lisbon on Friday")
    (docs / "inner" / "budget.txt").write_text("eleven hundred euros")
    assert "shared directory holiday-plans: 2 file(s)" in ok(capsys, A, "share", str(docs))
    assert "alice shared directory holiday-plans" in ok(capsys, C, "sync", "--peer", str(A))
    assert "0: directory holiday-plans from alice" in ok(capsys, C, "shares")
    ok(capsys, C, "fetch", "holiday-plans", str(tmp_path / "out"))
    assert (tmp_path / "out" / "holiday-plans" / "itinerary.txt").read_text() == "fly to Lisbon on Friday"
    assert (tmp_path / "out" / "holiday-plans" / "inner" / "budget.txt").read_text() == "eleven hundred euros"
    # remove bobby; he reads nothing sent afterwards
    assert "bobby was removed" in ok(capsys, A, "remove", "bobby")
    ok(capsys, A, "send", "bobby cannot see this")
    out = ok(capsys, B, "sync", "--peer", str(A))
    assert "removed from the group by alice" in out and "cannot see" not in out
    assert "bobby cannot see this" in ok(capsys, C, "sync", "--peer", str(A))
    assert "cannot see" not in ok(capsys, B, "read", "--all")
    code, _, err = run(capsys, B, "send", "let me in")
    assert code == 1 and "removed" in err
    members = ok(capsys, C, "members")
    assert members.splitlines() == ["0: alice", "2: carol (you)"]
    assert "epoch 2" in ok(capsys, C, "epochs")
    # read shows new messages once, --all everything (own messages included)
    first = ok(capsys, C, "read")
    assert "bobby: hello from bobby" in first and "alice: bobby cannot see this" in first
    assert ok(capsys, C, "read") == ""
    ok(capsys, A, "update")
    assert "committed by alice" in ok(capsys, C, "sync", "--peer", str(A))
    assert "up to date" in ok(capsys, C, "sync", "--peer", str(A))
    # nothing readable in any block of any store
    for d in (A, B, C):
        st = SqliteStore(d / "store.sqlite")
        try:
            assert_no_plaintext(
                st,
                ["alice", "bobby", "carol", "hello from", "holiday-plans", "itinerary", "Lisbon", "eleven hundred"],
            )
        finally:
            st.close()


def test_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    A = tmp_path / "A"
    code, _, err = run(capsys, A, "send", "x")
    assert code == 1 and err.startswith("error: no replica saved")
    ok(capsys, A, "create", "alice")
    code, _, err = run(capsys, A, "create", "alice")
    assert code == 1 and "already belongs to a group" in err
    code, _, err = run(capsys, A, "invite", "not-base64!!")
    assert code == 1 and "neither a key package file nor base64" in err
    code, _, err = run(capsys, A, "remove", "nobody")
    assert code == 1 and "no member named" in err
    code, _, err = run(capsys, A, "sync")
    assert code == 1 and "nothing to sync from" in err
    code, _, err = run(capsys, A, "sync", "--peer", str(tmp_path / "nowhere"))
    assert code == 1 and "no crdt-mls store" in err
    code, _, err = run(capsys, A, "share", str(tmp_path / "missing"))
    assert code == 1 and "no such file" in err
    code, _, err = run(capsys, A, "fetch", "nothing", str(tmp_path))
    assert code == 1 and "no received share" in err
    code, _, err = run(capsys, A, "--ipfs", "nonsense", "heads")
    assert code == 1 and "not an IPFS API address" in err


def test_parse_api() -> None:
    assert _parse_api("http://127.0.0.1:5001") == ("127.0.0.1", 5001)
    assert _parse_api("localhost:8080/") == ("localhost", 8080)
    assert _parse_api("/ip4/10.0.0.1/tcp/5002") == ("10.0.0.1", 5002)
    with pytest.raises(InvalidArgument):
        _parse_api("http://host")


def test_progress_bar_to_stream() -> None:
    stream = io.StringIO()
    os.environ["CRDT_MLS_PROGRESS"] = "1"
    try:
        bar = Progress("fetch", 4, stream=stream)
        for _ in range(4):
            bar.step()
        bar.close()
    finally:
        del os.environ["CRDT_MLS_PROGRESS"]
    text = stream.getvalue()
    assert "fetch [" in text and "4/4" in text and text.endswith("\n")
    quiet = io.StringIO()
    bar = Progress("fetch", 4, stream=quiet)
    bar.step()
    bar.close()
    assert quiet.getvalue() == ""


# ----------------------------------------------------------------------------- separate processes


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "crdt_mls", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_demo_runs_and_exits_zero(tmp_path: Path) -> None:
    res = cli("demo", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "bob   | joined at epoch 1 with alice, bob, carol, dave" in out
    assert "alice | [epoch 1] bob: hi all, bob here" in out
    assert "dave  | removed from the group by alice at epoch 3" in out
    assert "dave  | [epoch 3]" not in out
    assert "bob   | [epoch 3] alice: dave is gone, this is just for us" in out
    assert "wait for missing parents" in out
    assert "concurrent commits: 2 epoch heads, a merge is needed" in out
    assert "erin  | merge of 2 branches by" in out
    assert "all 4 members in epoch 6 with one shared secret: yes" in out
    assert "carol | [epoch 6] erin: hello everyone, one group again" in out
    assert out.rstrip().endswith("demo finished")


def test_usage_errors_exit_two(tmp_path: Path) -> None:
    res = cli("no-such-command", cwd=tmp_path)
    assert res.returncode == 2 and "invalid choice" in res.stderr


@pytest.mark.slow  # eight interpreter start-ups (~15 s); the in-process session covers the same commands
def test_session_as_processes(tmp_path: Path) -> None:
    a, b = str(tmp_path / "A"), str(tmp_path / "B")

    def must(*args: str) -> str:
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout

    must("--data-dir", a, "create", "alice")
    must("--data-dir", b, "init", "bobby")
    must("--data-dir", b, "key-package", "-o", "b.kp")
    assert "invitation: bafy" in must("--data-dir", a, "invite", "b.kp")
    must("--data-dir", b, "join", "--peer", a)
    must("--data-dir", b, "send", "greetings across processes")
    assert "bobby: greetings across processes" in must("--data-dir", a, "sync", "--peer", b)
    assert "bobby: greetings across processes" in must("--data-dir", a, "read", "--all")


def test_fork_and_merge_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    A, B = tmp_path / "A", tmp_path / "B"
    ok(capsys, A, "create", "alice")
    ok(capsys, B, "init", "bobby")
    ok(capsys, B, "key-package", "-o", str(tmp_path / "b.kp"))
    ok(capsys, A, "invite", str(tmp_path / "b.kp"))
    ok(capsys, B, "join", "--peer", str(A))
    ok(capsys, A, "update")
    ok(capsys, B, "update")
    assert "a merge is needed" in ok(capsys, A, "sync", "--peer", str(B))
    assert "merge needed" in ok(capsys, A, "epochs")
    code, _, err = run(capsys, A, "update")
    assert code == 1 and "merge is needed" in err
    assert "merge of 2 branches by alice" in ok(capsys, A, "merge")
    out = ok(capsys, B, "sync", "--peer", str(A))
    assert "merge of 2 branches by alice: epoch 3" in out
    ok(capsys, B, "send", "merged and talking")
    assert "bobby: merged and talking" in ok(capsys, A, "sync", "--peer", str(B))
    assert "merge needed" not in ok(capsys, B, "epochs")


# ----------------------------------------------------------------------------- password identity (issue 6)


def test_password_identity_and_nothing_secret_on_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from crdt_mls.cli import unlock_identity
    from crdt_mls.replica import Replica

    A, B = tmp_path / "A", tmp_path / "B"
    ok(capsys, A, "create", "alice")
    ok(capsys, B, "init", "bobby")
    ok(capsys, B, "key-package", "-o", str(tmp_path / "b.kp"))
    ok(capsys, A, "invite", str(tmp_path / "b.kp"))
    ok(capsys, B, "join", "--peer", str(A))
    ok(capsys, B, "send", "quixotic marmalade")
    assert "bobby: quixotic marmalade" in ok(capsys, A, "sync", "--peer", str(B))
    ok(capsys, A, "send", "zephyr lighthouse")
    assert "alice: zephyr lighthouse" in ok(capsys, B, "sync", "--peer", str(A))
    assert "zephyr lighthouse" in ok(capsys, A, "read", "--all")
    for d, name in ((A, "alice"), (B, "bobby")):
        st = SqliteStore(d / "store.sqlite")
        try:
            record = st.get_meta("cli/identity")
            assert record is not None
            ident, state_key = unlock_identity(record, PASSWORD, insecure_for_tests=True)
            assert ident.username == name
            # the replica signs with the password identity's Ed25519 key
            assert Replica.load(st, state_key=state_key).signature_key == ident.signing_public
        finally:
            st.close()
        raw = b"".join(p.read_bytes() for p in d.iterdir() if p.name.startswith("store.sqlite"))
        for secret in (ident.signing_seed, ident.box_secret, state_key):
            assert secret not in raw
        for word in (PASSWORD, "quixotic", "marmalade", "zephyr", "lighthouse"):
            for enc in (word.encode("utf-8"), word.encode("utf-16-le")):
                assert enc not in raw, (d, word)


def dump(data: Path) -> list[tuple[object, ...]]:
    """Every row of every table of a data directory's SQLite store."""
    import sqlite3

    con = sqlite3.connect(data / "store.sqlite")
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return [(t, *row) for t in tables for row in con.execute(f"SELECT * FROM {t} ORDER BY 1")]
    finally:
        con.close()


def test_wrong_password_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    A = tmp_path / "A"
    ok(capsys, A, "init", "Alice")  # names are normalized
    assert "group created by alice" in ok(capsys, A, "create", "ALICE")
    ok(capsys, A, "send", "before the wrong password")
    before = dump(A)
    monkeypatch.setenv("CRDT_MLS_PASSWORD", "not the password")
    for args in (("send", "x"), ("read",), ("members",), ("key-package",), ("update",)):
        code, out, err = run(capsys, A, *args)
        assert code == 1 and out == "" and err == "error: wrong password: it does not unlock this identity\n", args
    assert dump(A) == before
    monkeypatch.setenv("CRDT_MLS_PASSWORD", PASSWORD)
    assert "alice: before the wrong password" in ok(capsys, A, "read", "--all")


def test_password_prompt_and_weak_params_need_the_test_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import getpass

    A = tmp_path / "A"
    monkeypatch.delenv("CRDT_MLS_PASSWORD")
    prompts: list[str] = []
    answers = iter(["typed secret", "typed secret", "typed secret", "other", "mistyped"])

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    ok(capsys, A, "init", "erin")  # asked twice
    assert prompts == ["new password for erin: ", "repeat the password: "]
    assert ok(capsys, A, "key-package").strip()  # unlocked with the prompt
    assert prompts[-1] == "password for erin: "
    code, _, err = run(capsys, tmp_path / "B", "init", "fay")  # two different answers
    assert code == 1 and "the two passwords differ" in err
    code, _, err = run(capsys, tmp_path / "B", "key-package")
    assert code == 1 and "no replica saved" in err
    # a store made with test scrypt parameters is refused without the test-only flag
    monkeypatch.setenv("CRDT_MLS_PASSWORD", "typed secret")
    monkeypatch.delenv("CRDT_MLS_INSECURE_TEST_SCRYPT")
    code, _, err = run(capsys, A, "key-package")
    assert code == 1 and "below the minimum" in err
