"""A hostile network, driven by tests/admission.rs: many connections from
one source address, each doing one bad thing, and how the server treated
each. Prints one JSON object.

  idle SRC PORT N HOLD          N connections that send nothing
  ignore SRC PORT N HOLD        N connections that send a version line and a
                                KEXINIT, then only SSH_MSG_IGNORE each second
  fill SRC PORT N HOLD          connects until N are admitted (waiting for
                                each server's first bytes), holds them HOLD s
  probe SRC PORT N              N connections one after another: admitted
                                (the server's version line) or refused (its
                                one-line reason)?
  bigname SRC PORT N            a wrong token for a user name of N bytes
  floods PORT USER TOKEN N      on one PTY shell: N env requests (LC_TA, LC_TB, …),
                                N window changes, N refused subsystem
                                requests, 50 direct-tcpip opens to a 200 kB
                                host name; then the shell counts its LC_T
                                variables and exits 3
  bigexec PORT USER TOKEN N     an exec request of N bytes
  garbage SRC PORT              one connection per kind of malformed
                                pre-authentication input (random bytes,
                                absurd packet lengths, a 10,000-byte
                                version line, huge or lying KEXINIT name
                                lists, bad ECDH points): how long until the
                                server closed each
  channels PORT USER TOKEN TOKEN2
                                after login: a pty-req of 0xFFFFFFFF
                                columns and rows, 2,000 extra channel
                                opens; then with TOKEN2, 64 MiB offered to
                                a command that never reads: how much the
                                server took
  tokens SRC PORT USER N PAR    N wrong tokens over connections of up to 6
                                tries, PAR at a time (paramiko); a connection
                                refused at accept spends one of the N

For idle and ignore: each connection's fate after HOLD seconds at most:
how long until the server closed it, and whether it was refused at once.
"""

import json
import os
import selectors
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"


def connect(src, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.setblocking(True)
    s.connect((HOST, int(port)))
    return s


def packet(payload):
    """An unencrypted SSH binary packet (RFC 4253 §6), block size 8."""
    pad = 8 - ((5 + len(payload)) % 8)
    if pad < 4:
        pad += 8
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + bytes(pad)


def name_list(names):
    b = ",".join(names).encode()
    return struct.pack(">I", len(b)) + b


def kexinit():
    lists = [
        ["curve25519-sha256"],
        ["ssh-ed25519"],
        ["chacha20-poly1305@openssh.com"],
        ["chacha20-poly1305@openssh.com"],
        ["hmac-sha2-256"],
        ["hmac-sha2-256"],
        ["none"],
        ["none"],
        [],
        [],
    ]
    body = bytes([20]) + os.urandom(16) + b"".join(name_list(l) for l in lists)
    return packet(body + b"\x00" + b"\x00\x00\x00\x00")


def ignore():
    return packet(bytes([2]) + struct.pack(">I", 4) + b"ping")


def hold(src, port, n, limit, talk):
    """Opens n connections; returns each one's fate: seconds from its
    connect until the server closed it (None if it did not within `limit`
    seconds of the last connect), whether it was refused at once (the
    server's one-line reason), and the first bytes the server sent."""
    sel = selectors.DefaultSelector()
    opened, closed, first = {}, {}, {}

    def watch(timeout):
        for key, _ in sel.select(timeout=timeout):
            i = key.data
            try:
                data = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data and i not in first:
                first[i] = data
            if not data:
                closed[i] = time.monotonic() - opened.pop(i)
                sel.unregister(key.fileobj)
                key.fileobj.close()

    for i in range(n):
        try:
            s = connect(src, port)
        except OSError:
            continue
        opened[i] = time.monotonic()
        if talk:
            s.sendall(b"SSH-2.0-hostile_0.1\r\n" + kexinit())
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        watch(0)
    start = time.monotonic()
    next_ping = start + 1
    while opened and time.monotonic() - start < limit:
        now = time.monotonic()
        if talk and now >= next_ping:
            for key in list(sel.get_map().values()):
                try:
                    key.fileobj.send(ignore())
                except OSError:
                    pass
            next_ping = now + 1
        watch(0.05)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    out = []
    for i in range(n):
        got = first.get(i, b"")
        out.append(
            {
                "closed_after": closed.get(i),
                "refused": got.startswith(b"Not allowed") or got.startswith(b"Too many"),
                "first": got[:40].decode(errors="replace"),
            }
        )
    return out


def first_line(s):
    """What the server sends first, up to its first newline: its version
    line when it admits the connection, its one-line reason when not."""
    s.settimeout(5)
    got = b""
    try:
        while b"\n" not in got:
            chunk = s.recv(256)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    return got


def fill(src, port, n, limit):
    """Connects until n connections are admitted (the server sent its
    version line, not a refusal), holds them `limit` seconds."""
    held, tries = [], 0
    while len(held) < n and tries < 50 * n + 1000:
        tries += 1
        s = connect(src, port)
        got = first_line(s)
        if got.startswith(b"SSH-"):
            held.append(s)
        else:
            s.close()
    time.sleep(limit)
    for s in held:
        s.close()
    return {"held": len(held), "tries": tries}


def probe(src, port, n):
    admitted = refused = 0
    for _ in range(n):
        s = connect(src, port)
        got = first_line(s)
        s.close()
        if got.startswith(b"SSH-"):
            admitted += 1
        else:
            refused += 1
        time.sleep(0.03)
    return {"admitted": admitted, "refused": refused}


def tokens(src, port, user, n, par):
    import paramiko

    lock = threading.Lock()
    stats = {"tried": 0, "connections": 0, "refused_at_accept": 0, "errors": 0}

    def worker():
        while True:
            with lock:
                if stats["tried"] + stats["refused_at_accept"] >= n:
                    return
                # This connection spends one of the N if it is refused.
                stats["refused_at_accept"] += 1
            try:
                s = connect(src, port)
            except OSError:
                with lock:
                    stats["errors"] += 1
                continue
            s.settimeout(15)
            t = paramiko.Transport(s)
            try:
                t.start_client(timeout=15)
            except Exception:
                t.close()
                continue
            with lock:
                stats["refused_at_accept"] -= 1
            with lock:
                stats["connections"] += 1
            for _ in range(6):
                with lock:
                    if stats["tried"] + stats["refused_at_accept"] >= n:
                        break
                    stats["tried"] += 1
                try:
                    t.auth_password(user, "tg_" + os.urandom(32).hex()[:43])
                    break  # never happens with a random token
                except paramiko.AuthenticationException:
                    continue
                except Exception:
                    break
            t.close()

    threads = [threading.Thread(target=worker) for _ in range(int(par))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return stats


def session(port, user, token, src="127.0.0.1"):
    import paramiko

    s = connect(src, port)
    t = paramiko.Transport(s)
    t.start_client(timeout=15)
    t.auth_password(user, token)
    return t


def raw(t, chan, kind, want, *fields):
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string(kind)
    m.add_boolean(want)
    for f in fields:
        if isinstance(f, int):
            m.add_int(f)
        else:
            m.add_string(f)
    t._send_user_message(m)


def bigname(src, port, n):
    import paramiko

    s = connect(src, port)
    t = paramiko.Transport(s)
    t.start_client(timeout=15)
    try:
        t.auth_password("u" * n, "tg_wrong")
        return {"refused": False}
    except paramiko.AuthenticationException:
        return {"refused": True}
    finally:
        t.close()


def floods(port, user, token, n):
    import paramiko

    t = session(port, user, token)
    chan = t.open_session()
    chan.get_pty(term="xterm", width=80, height=24)
    def letters(i):
        s = ""
        while True:
            s = chr(ord("A") + i % 26) + s
            i //= 26
            if i == 0:
                return s

    for i in range(n):
        raw(t, chan, "env", False, "LC_T" + letters(i), "x")
    chan.invoke_shell()
    for i in range(n):
        raw(t, chan, "window-change", False, 80 + i % 50, 24 + i % 20, 0, 0)
    for i in range(n):
        raw(t, chan, "subsystem", False, "sftp")
    refused_opens = 0
    for _ in range(50):
        try:
            t.open_channel("direct-tcpip", ("h" * 200_000, 22), ("127.0.0.1", 0), timeout=10)
        except paramiko.ChannelException:
            refused_opens += 1
    chan.send(b"echo LC=$(env | grep -c ^LC_T); exit 3\n")
    out = b""
    end = time.time() + 30
    while not chan.exit_status_ready() and time.time() < end:
        if chan.recv_ready():
            out += chan.recv(65536)
        else:
            time.sleep(0.02)
    while chan.recv_ready():
        out += chan.recv(65536)
    status = chan.recv_exit_status()
    t.close()
    return {"status": status, "output": out.decode(errors="replace"), "refused_opens": refused_opens}


def bigexec(port, user, token, n):
    """An exec of n bytes; {"closed": true} when the server drops the
    connection instead (a packet past 256 KiB, as sshd does)."""
    t = session(port, user, token)
    try:
        chan = t.open_session()
        chan.exec_command("echo " + "y" * n)
        status = chan.recv_exit_status()
        err = chan.recv_stderr(65536).decode(errors="replace")
        return {"status": status, "stderr": err}
    except Exception as e:
        return {"closed": True, "error": str(e)}
    finally:
        t.close()


VERSION = b"SSH-2.0-hostile_0.1\r\n"


def kexinit_with(lists):
    body = bytes([20]) + os.urandom(16) + b"".join(lists)
    return packet(body + b"\x00" + b"\x00\x00\x00\x00")


def garbage_cases():
    names = [
        name_list(["curve25519-sha256"]),
        name_list(["ssh-ed25519"]),
        name_list(["chacha20-poly1305@openssh.com"]),
        name_list(["chacha20-poly1305@openssh.com"]),
        name_list(["hmac-sha2-256"]),
        name_list(["hmac-sha2-256"]),
        name_list(["none"]),
        name_list(["none"]),
        name_list([]),
        name_list([]),
    ]
    huge = list(names)
    huge[0] = name_list(["x" * 60 + str(i) for i in range(3000)] + ["curve25519-sha256"])
    lying = list(names)
    lying[0] = struct.pack(">I", 0x7FFFFFF0) + b"curve25519-sha256"
    ecdh = lambda q: packet(bytes([30]) + struct.pack(">I", len(q)) + q)
    return [
        ("random_bytes", os.urandom(4096)),
        ("version_then_random", VERSION + os.urandom(4096)),
        ("version_line_10000_bytes", b"SSH-2.0-" + b"v" * 10000 + b"\r\n" + kexinit()),
        ("packet_length_ffffffff", VERSION + struct.pack(">IB", 0xFFFFFFFF, 4) + bytes(64)),
        ("packet_length_zero", VERSION + struct.pack(">IB", 0, 4) + bytes(64)),
        ("packet_length_35000000", VERSION + struct.pack(">IB", 35_000_000, 4) + bytes(64)),
        ("kexinit_huge_name_list", VERSION + kexinit_with(huge)),
        ("kexinit_lying_name_list", VERSION + kexinit_with(lying)),
        ("kexinit_no_common_kex", VERSION + kexinit_with([name_list(["nope"])] + names[1:])),
        ("ecdh_point_all_zero", VERSION + kexinit() + ecdh(bytes(32))),
        # Low-order points (orders 4 and 8; all zeros above is order 2): the
        # shared secret would be all zeros, known to anyone watching.
        ("ecdh_point_order_4", VERSION + kexinit() + ecdh(b"\x01" + bytes(31))),
        ("ecdh_point_order_8", VERSION + kexinit() + ecdh(bytes.fromhex(
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"))),
        ("ecdh_point_5_bytes", VERSION + kexinit() + ecdh(b"\x01\x02\x03\x04\x05")),
        ("ecdh_point_65536_bytes", VERSION + kexinit() + ecdh(os.urandom(65536))),
    ]


def garbage(src, port, limit=5.0):
    """Each case on a fresh connection: seconds from sending it until the
    server closed the connection (None: still open after `limit`)."""
    out = {}
    for name, payload in garbage_cases():
        s = connect(src, port)
        s.settimeout(limit)
        start = time.monotonic()
        try:
            s.sendall(payload)
        except OSError:
            pass
        closed = None
        got = 0
        try:
            while time.monotonic() - start < limit:
                data = s.recv(65536)
                if not data:
                    closed = time.monotonic() - start
                    break
                got += len(data)
        except socket.timeout:
            pass
        except OSError:
            closed = time.monotonic() - start
        s.close()
        out[name] = {"closed_after": closed, "bytes_from_server": got}
    return out


def channels(port, user, token, token2):
    import paramiko

    t = session(port, user, token)
    r = {}
    chan = t.open_session()
    chan.get_pty(term="xterm", width=0xFFFFFFFF, height=0xFFFFFFFF,
                 width_pixels=0xFFFFFFFF, height_pixels=0xFFFFFFFF)
    chan.exec_command("stty size; echo done")
    out = b""
    end = time.time() + 20
    while not chan.exit_status_ready() and time.time() < end:
        if chan.recv_ready():
            out += chan.recv(65536)
        else:
            time.sleep(0.02)
    while chan.recv_ready():
        out += chan.recv(65536)
    r["pty_status"] = chan.recv_exit_status()
    r["pty_output"] = out.decode(errors="replace")
    opened, refused = 0, 0
    extra = []
    for _ in range(2000):
        try:
            extra.append(t.open_session(timeout=10))
            opened += 1
        except paramiko.ChannelException:
            refused += 1
        except paramiko.SSHException as e:
            r["open_error"] = str(e)
            break
    r["extra_opened"] = opened
    r["extra_refused"] = refused
    for c in extra:
        c.close()
    t.close()
    # A command that never reads its input (a second token: one session
    # per token): how much does the server take?
    t = session(port, user, token2)
    sink = t.open_session()
    sink.exec_command("sleep 30")
    sink.settimeout(0.0)
    sent = 0
    block = b"z" * 32768
    idle_since = time.monotonic()
    while sent < 64 * 1024 * 1024 and time.monotonic() - idle_since < 3:
        try:
            n = sink.send(block)
        except socket.timeout:
            n = 0
        if n:
            sent += n
            idle_since = time.monotonic()
        else:
            time.sleep(0.01)
    r["flood_accepted"] = sent
    r["alive_after"] = t.is_active()
    sink.close()
    t.close()
    return r


def main():
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "idle":
        r = hold(a[0], a[1], int(a[2]), float(a[3]), False)
    elif cmd == "ignore":
        r = hold(a[0], a[1], int(a[2]), float(a[3]), True)
    elif cmd == "fill":
        r = fill(a[0], a[1], int(a[2]), float(a[3]))
    elif cmd == "probe":
        r = probe(a[0], a[1], int(a[2]))
    elif cmd == "bigname":
        r = bigname(a[0], a[1], int(a[2]))
    elif cmd == "floods":
        r = floods(a[0], a[1], a[2], int(a[3]))
    elif cmd == "bigexec":
        r = bigexec(a[0], a[1], a[2], int(a[3]))
    elif cmd == "garbage":
        r = garbage(a[0], a[1])
    elif cmd == "channels":
        r = channels(a[0], a[1], a[2], a[3])
    elif cmd == "tokens":
        r = tokens(a[0], a[1], a[2], int(a[3]), int(a[4]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
