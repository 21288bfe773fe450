"""Role mpsocks.mptcp.socksifier: redsocks and the guest's redirect, with the socks_proxy role's dante, in
the world of test_socks_proxy: a host route via 10.66.6.2 gives a plain client MPTCP over both uplinks."""

from __future__ import annotations

import json
import sys

from mpsocks_testlib import assert_unchanged, sh, snapshot
from test_socks_proxy import CHECK, assert_one_line_failure, squatter, world  # noqa: F401 (a fixture)

TABLE = "mpsocks_socksifier"
# A plain TCP client (no proxy setting): one HTTP request to ADDRESS:PORT.
PLAIN_CLIENT = r"""
import json, socket, sys
try:
    sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    sock.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (sys.argv[3], sys.argv[1])).encode())
    answer = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        answer += part
    print(json.dumps({"body": answer.split(b"\r\n\r\n", 1)[1].decode()}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


def plain(made, address=CHECK, port=80, path="/?format=json"):
    """An HTTP request from the host with no proxy setting."""
    return json.loads(sh(sys.executable, "-c", PLAIN_CLIENT, address, str(port), path, netns=made.host))


def nft_table(made):
    return sh("nft", "list", "table", "inet", TABLE, netns=made.guest, check=False)


def test_a_host_route_via_the_guest_gives_any_application_mptcp(world):  # noqa: F811 (the fixture)
    rc, output, recap = world.play("socks_proxy", "socksifier")
    assert rc == 0 and recap["changed"] > 0, output
    rc, output, recap = world.play("socks_proxy", "socksifier")
    assert rc == 0 and recap["changed"] == 0, output

    # Without the route the host reaches the server directly, over uplink 0 alone: plain TCP.
    direct = json.loads(plain(world)["body"])
    assert direct["mptcp"] is False and direct["client"].startswith("198.18.0.2:"), direct
    sh("ip", "route", "add", f"{CHECK}/32", "via", "10.66.6.2", netns=world.host)
    socksified = json.loads(plain(world)["body"])
    assert socksified["mptcp"] is True and socksified["subflows"] == 2, socksified

    assert world.listeners(12345) == ["10.66.6.2:12345 redsocks"]
    # Only redirected connections reach redsocks: one made to its port directly is dropped.
    assert plain(world, "10.66.6.2", 12345)["error"] == "TimeoutError"
    assert "dnat ip to 10.66.6.2:12345" in nft_table(world)
    assert 'iifname "eth1" meta l4proto tcp jump socksify' in nft_table(world)
    log = (world.run_dir / "redsocks.log").read_text()
    assert "redsocks started" in log and "error" not in log.lower(), log


def test_the_socksifier_logs_in_as_the_first_socks_user(world):  # noqa: F811 (the fixture)
    users = {"mpsocks_socks_users": [{"name": "alice", "password": "s3cret"},
                                     {"name": "bob", "password": "b"}]}
    rc, output, _ = world.play("socks_proxy", "socksifier", extra=users)
    assert rc == 0, output
    assert oct((world.run_dir / "redsocks.conf").stat().st_mode & 0o777) == "0o600"
    sh("ip", "route", "add", f"{CHECK}/32", "via", "10.66.6.2", netns=world.host)
    answer = json.loads(plain(world)["body"])
    assert answer["mptcp"] is True and answer["subflows"] == 2, answer
    bad = {"mpsocks_socks_users": [{"name": "alice", "password": 'say "hi"'}]}
    rc, output, _ = world.play("socks_proxy", "socksifier", extra=bad)
    assert_one_line_failure(rc, output, "mpsocks_socks_users: the first user, whom redsocks logs in as, "
                                        'may have no " or \\ in name or password')


def test_a_port_in_use_fails_in_one_line_before_anything_changes(world):  # noqa: F811 (the fixture)
    before = snapshot(world.guest)
    with squatter(world.guest, "10.66.6.2", 12345) as pid:
        rc, output, _ = world.play("socksifier")
        assert_one_line_failure(rc, output,
                                "mpsocks_socksifier_port: TCP port 12345 is in use in the guest by ")
        assert f"(pid {pid}); stop it or choose another port" in output
    rc, output, _ = world.play("socksifier", extra={"mpsocks_socksifier_port": 1080})
    assert_one_line_failure(rc, output, "mpsocks_socksifier_port: 1080 is not a TCP port (1 to 65535) other "
                                        "than the SOCKS port 1080")
    assert not world.run_dir.exists()
    assert_unchanged(before, world.guest)


def test_absent_removes_the_redirect_and_redsocks(world):  # noqa: F811 (the fixture)
    assert world.play("socks_proxy", "socksifier")[0] == 0
    rc, output, recap = world.play("socksifier", extra={"mpsocks_state": "absent"})
    assert rc == 0 and recap["changed"] > 0, output
    assert nft_table(world) == "" and world.listeners(12345) == []
    assert world.listeners(1080) == ["10.66.6.2:1080 danted"]
    assert "redsocks.conf" not in [path.name for path in world.run_dir.iterdir()]
    assert world.play("socksifier", extra={"mpsocks_state": "absent"})[2]["changed"] == 0
