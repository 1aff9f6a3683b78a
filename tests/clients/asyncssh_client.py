"""asyncssh (from PyPI) as its documentation says to use it, driven by
tests/clients_asyncssh.rs. Each command behaves like a command-line client:
the remote stdout and stderr on ours, the remote exit status as ours (255
when the login fails, with asyncssh's exception on stderr). Host keys are
checked against ~/.ssh/known_hosts, as asyncssh does by default.

  exec PORT USER TOKEN CMD      connect(password=...) + run(CMD)
  shell PORT USER TOKEN         a PTY shell: size, resize, Ctrl-C, exit 7
  forward PORT USER TOKEN HOST TPORT N
                                N bytes through open_connection (direct-tcpip)
  collect PORT IDENT            the defaults: keys from ~/.ssh, no password

The token comes in argv here because this is the test's own driver.
"""

import asyncio
import json
import sys

import asyncssh

HOST = "127.0.0.1"


def connect(port, user, **kw):
    return asyncssh.connect(HOST, int(port), username=user, login_timeout=15, **kw)


def login_failed(e):
    sys.stderr.write(f"asyncssh: {type(e).__name__}: {e}\n")
    sys.exit(255)


async def cmd_exec(port, user, token, command):
    try:
        conn = await connect(port, user, password=token)
    except (asyncssh.Error, OSError) as e:
        login_failed(e)
    async with conn:
        r = await conn.run(command, encoding=None)
    sys.stdout.buffer.write(r.stdout)
    sys.stderr.buffer.write(r.stderr)
    sys.exit(r.exit_status)


async def read_until(stdout, needle, seen):
    async def more():
        while needle not in seen[0]:
            chunk = await stdout.read(65536)
            if not chunk:
                raise EOFError(f"EOF before {needle!r}: {seen[0]!r}")
            seen[0] += chunk

    await asyncio.wait_for(more(), 15)


async def cmd_shell(port, user, token):
    async with await connect(port, user, password=token) as conn:
        p = await conn.create_process(term_type="xterm", term_size=(80, 24))
        seen = [""]
        p.stdin.write("echo S$(stty size | tr ' ' x)\n")
        await read_until(p.stdout, "S24x80", seen)
        p.change_terminal_size(100, 30)
        p.stdin.write("echo S$(stty size | tr ' ' x)\n")
        await read_until(p.stdout, "S30x100", seen)
        p.stdin.write("sleep 30; echo A$((1+1))\n")
        await asyncio.sleep(0.5)
        p.stdin.write("\x03")
        p.stdin.write("echo C$?\n")
        await read_until(p.stdout, "C130", seen)
        p.stdin.write("exit 7\n")
        r = await p.wait()
    sys.stdout.write(seen[0])
    sys.exit(r.exit_status)


async def cmd_forward(port, user, token, host, tport, n):
    async with await connect(port, user, password=token) as conn:
        reader, writer = await conn.open_connection(host, int(tport))
        data = bytes((i * 31) & 0xFF for i in range(int(n)))
        writer.write(data)
        back = await asyncio.wait_for(reader.readexactly(len(data)), 15)
        writer.close()
    print(json.dumps({"sent": len(data), "same": back == data}))


async def cmd_collect(port, ident):
    try:
        async with await connect(port, ident):
            print("logged in")
    except asyncssh.PermissionDenied as e:
        print(f"refused: {e}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    f = {
        "exec": cmd_exec,
        "shell": cmd_shell,
        "forward": cmd_forward,
        "collect": cmd_collect,
    }[cmd]
    asyncio.run(f(*args))


if __name__ == "__main__":
    main()
