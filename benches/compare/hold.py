#!/usr/bin/env python3
"""Backend or client that holds idle TCP connections open (for the memory test).

  hold.py serve ADDR PORT...     accept on every PORT and hold each connection
  hold.py connect ADDR PORT N    open N connections to ADDR:PORT and hold them

Runs until killed. Loopback addresses only.
"""
import asyncio, resource, socket, sys, time

def raise_nofile():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

async def serve(addr, ports):
    held = []
    async def on_conn(reader, writer):
        held.append(writer)
        await reader.read()  # until the peer closes
        writer.close()
    for p in ports:
        await asyncio.start_server(on_conn, addr, int(p), backlog=4096)
    await asyncio.Event().wait()

def connect(addr, port, n):
    socks = []
    deadline = time.monotonic() + 120
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect((addr, port))
        except OSError as e:
            print("connect failed:", e, file=sys.stderr, flush=True)
            s.close()
            break
        socks.append(s)
    print(len(socks), flush=True)
    while True:
        time.sleep(3600)

if __name__ == "__main__":
    raise_nofile()
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3:]))
    else:
        connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
