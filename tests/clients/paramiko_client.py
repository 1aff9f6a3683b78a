"""paramiko (Debian's python3-paramiko) as its documentation says to use it,
driven by tests/clients_paramiko.rs. Each command behaves like a command-line
client: the remote stdout and stderr on ours, the remote exit status as ours
(255 when the login fails, with paramiko's exception on stderr).

  exec PORT USER TOKEN CMD         SSHClient.connect + exec_command; a key in
                                   ~/.ssh is tried (and refused) first
  shell PORT USER TOKEN            a PTY shell: size, resize, Ctrl-C, exit 7
  forward PORT USER TOKEN HOST TPORT N
                                   N bytes through a direct-tcpip channel
  collect PORT IDENT KEYFILE       public key only, no password
  pipelined PORT USER TOKEN        channel requests sent back to back at the
                                   packet level; prints the replies in order

The token comes in argv here because this is the test's own driver; tollgate
never sees argv of its clients.
"""

import json
import logging
import os
import socket
import sys
import threading
import time

import paramiko
from paramiko.common import (
    MSG_CHANNEL_FAILURE,
    MSG_CHANNEL_SUCCESS,
    cMSG_CHANNEL_REQUEST,
)
from paramiko.message import Message

HOST = "127.0.0.1"


def trace_auth():
    """Notes paramiko's own account of each authentication method it tried
    in the file TG_AUTH_TRACE names, one line each."""
    path = os.environ.get("TG_AUTH_TRACE")
    if not path:
        return
    out = open(path, "a")

    class Note(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("Authentication"):
                out.write(msg + "\n")
                out.flush()

    log = logging.getLogger("paramiko.transport")
    log.setLevel(logging.DEBUG)
    log.addHandler(Note())


def client(port, user, **kw):
    c = paramiko.SSHClient()
    c.load_host_keys(os.path.expanduser("~/.ssh/known_hosts"))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(
        HOST,
        int(port),
        username=user,
        allow_agent=False,
        timeout=15,
        banner_timeout=15,
        auth_timeout=15,
        **kw,
    )
    return c


def login_failed(e):
    sys.stderr.write(f"paramiko: {type(e).__name__}: {e}\n")
    sys.exit(255)


def read_until(chan, needle, limit=15):
    got = b""
    end = time.time() + limit
    while needle.encode() not in got:
        if time.time() > end:
            raise TimeoutError(f"never saw {needle!r} in {got!r}")
        if chan.recv_ready():
            got += chan.recv(65536)
        else:
            time.sleep(0.02)
    return got.decode(errors="replace")


def cmd_exec(port, user, token, command):
    try:
        c = client(port, user, password=token)
    except paramiko.SSHException as e:
        login_failed(e)
    _, out, err = c.exec_command(command)
    o, e = out.read(), err.read()
    status = out.channel.recv_exit_status()
    sys.stdout.buffer.write(o)
    sys.stderr.buffer.write(e)
    sys.exit(status)


def cmd_shell(port, user, token):
    c = client(port, user, password=token)
    chan = c.get_transport().open_session()
    chan.get_pty(term="xterm", width=80, height=24)
    chan.invoke_shell()
    seen = []
    chan.send(b"echo S$(stty size | tr ' ' x)\n")
    seen.append(read_until(chan, "S24x80"))
    chan.resize_pty(width=100, height=30)
    chan.send(b"echo S$(stty size | tr ' ' x)\n")
    seen.append(read_until(chan, "S30x100"))
    chan.send(b"sleep 30; echo A$((1+1))\n")
    time.sleep(0.5)
    chan.send(b"\x03")
    chan.send(b"echo C$?\n")
    seen.append(read_until(chan, "C130"))
    chan.send(b"exit 7\n")
    status = chan.recv_exit_status()
    sys.stdout.write("".join(seen))
    sys.exit(status)


def cmd_forward(port, user, token, host, tport, n):
    c = client(port, user, password=token)
    chan = c.get_transport().open_channel(
        "direct-tcpip", (host, int(tport)), ("127.0.0.1", 0)
    )
    data = bytes((i * 31) & 0xFF for i in range(int(n)))
    sender = threading.Thread(target=chan.sendall, args=(data,))
    sender.start()
    back = b""
    while len(back) < len(data):
        chunk = chan.recv(65536)
        if not chunk:
            break
        back += chunk
    sender.join()
    chan.close()
    c.close()
    print(json.dumps({"sent": len(data), "same": back == data}))


def cmd_collect(port, ident, keyfile):
    try:
        client(port, ident, key_filename=keyfile, look_for_keys=False)
        print("logged in")
    except paramiko.AuthenticationException as e:
        print(f"refused: {e}")


def cmd_pipelined(port, user, token):
    sock = socket.create_connection((HOST, int(port)), timeout=15)
    t = paramiko.Transport(sock)
    t.start_client(timeout=15)
    t.auth_password(user, token)
    chan = t.open_session()
    replies = []
    table = dict(t._channel_handler_table)

    def noting(kind, handler=None):
        def h(ch, m):
            replies.append(kind)
            if handler:
                handler(ch, m)

        return h

    table[MSG_CHANNEL_SUCCESS] = noting("success", table[MSG_CHANNEL_SUCCESS])
    # paramiko closes a channel whose request failed (its own requests are
    # one at a time); here a refusal is only noted.
    table[MSG_CHANNEL_FAILURE] = noting("failure")
    t._channel_handler_table = table

    def request(kind, want, *fields):
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
        return m

    sent = [
        ("pty-req", request("pty-req", True, "xterm", 80, 24, 0, 0, b"\x00")),
        ("env LANG", request("env", True, "LANG", "C.UTF-8")),
        ("env EVIL", request("env", True, "LD_PRELOAD", "/tmp/x.so")),
        ("simple@putty", request("simple@putty.projects.tartarus.org", False)),
        ("winadj@putty", request("winadj@putty.projects.tartarus.org", True)),
        ("shell", request("shell", True)),
        ("exec", request("exec", True, "echo second")),
        ("pty-req again", request("pty-req", True, "xterm", 80, 24, 0, 0, b"\x00")),
    ]
    for _, m in sent:
        t._send_user_message(m)
    end = time.time() + 15
    expected = 7  # every request above but simple@putty wants a reply
    while len(replies) < expected and time.time() < end:
        time.sleep(0.02)
    time.sleep(0.3)  # a stray extra reply would show up here
    chan.send(b"exit 5\n")
    status = chan.recv_exit_status()
    print(
        json.dumps(
            {
                "requests": [k for k, _ in sent],
                "replies": replies,
                "shell_status": status,
            }
        )
    )
    t.close()


def main():
    trace_auth()
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "exec": cmd_exec,
        "shell": cmd_shell,
        "forward": cmd_forward,
        "collect": cmd_collect,
        "pipelined": cmd_pipelined,
    }[cmd](*args)


if __name__ == "__main__":
    main()
