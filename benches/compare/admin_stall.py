#!/usr/bin/env python3
"""Does operator traffic stall the data plane? New-connection latency of
lb-proxy holding many services, with and without a /metrics scraper and API
pollers, in one run.

Starts a TCP echo backend on 127.0.50.1, then each lb-proxy build given
(--bin NAME=PATH, repeatable; default: the release build as "lb") with
--services services (default 10,000; cluster IPs 127.64.x.y, one pod behind
all of them, so /metrics and /api/v1/services describe every one), and
measures, in interleaved phases of --phase seconds:

    quiet   no operator traffic
    busy    one scraper GET /metrics every second, and four pollers each
            GET /api/v1/services every second (as four open status pages
            would), each in its own curl process

The probe opens --rate new connections a second to the first service's
cluster IP, sends one byte and waits for its echo: the time from connect()
to the echo is one sample (accept, endpoint choice, dial, one round trip).
It prints p50/p99/max per build and phase and the busy/quiet p99 ratio.
Every address is on loopback; every step is bounded in time. Not part of
.ci/run: this is a benchmark.

    benches/compare/admin_stall.py [--services 10000] [--phase 15] [--rounds 2] \
        [--bin lb=target/release/lb-proxy --bin old=/path/to/older/lb-proxy]
"""
import argparse, os, resource, shutil, signal, socket, socketserver, statistics, subprocess, sys
import tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = ("127.0.50.1", 18080)
ADMIN_HOST = "127.0.0.1"


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while True:
                data = self.request.recv(4096)
                if not data:
                    return
                self.request.sendall(data)
        except OSError:
            return


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def vip(i):
    return "127.64.%d.%d" % (i // 250, i % 250 + 1)


def config(services, admin_port):
    out = [
        "[node]\nname = \"bench\"\naddresses = [\"127.0.0.1\"]\n",
        "[cluster]\nservice_cidr = \"127.64.0.0/16\"\n",
        "[proxy]\nconnect_timeouts_ms = [1000]\n",
        "[admin]\nlisten = \"%s:%d\"\n" % (ADMIN_HOST, admin_port),
        "[[pods]]\nname = \"backend\"\nip = \"%s\"\nlabels = { app = \"backend\" }\n"
        "ports = [{ name = \"echo\", container_port = %d }]\n" % BACKEND,
    ]
    for i in range(services):
        out.append(
            "[[services]]\nname = \"svc-%d\"\ncluster_ip = \"%s\"\nselector = { app = \"backend\" }\n"
            "ports = [{ name = \"echo\", port = 80, target_port = \"echo\" }]\n" % (i, vip(i))
        )
    return "".join(out)


def free_port(host):
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_connect(addr, bound):
    end = time.monotonic() + bound
    while time.monotonic() < end:
        try:
            socket.create_connection(addr, timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def sample(addr):
    """Seconds from connect() to the echo of one byte; None when it failed."""
    start = time.perf_counter()
    try:
        with socket.create_connection(addr, timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"x")
            if s.recv(1) != b"x":
                return None
    except OSError:
        return None
    return time.perf_counter() - start


def probe(addr, rate, seconds):
    samples, failed = [], 0
    gap = 1.0 / rate
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        t = sample(addr)
        if t is None:
            failed += 1
        else:
            samples.append(t)
        next_at += gap
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    return samples, failed


def load(admin_port):
    """A scraper and four pollers, each a shell loop of curl, one request a second."""
    base = "http://%s:%d" % (ADMIN_HOST, admin_port)
    loop = "while :; do curl -s -o /dev/null --max-time 10 %s; sleep 1; done"
    cmds = [loop % (base + "/metrics")] + [loop % (base + "/api/v1/services")] * 4
    return [subprocess.Popen(["sh", "-c", c], start_new_session=True) for c in cmds]


def stop(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=5)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--phase", type=int, default=15, help="seconds per phase")
    ap.add_argument("--rounds", type=int, default=2, help="quiet+busy pairs per build")
    ap.add_argument("--rate", type=int, default=100, help="probe connections per second")
    ap.add_argument("--bin", action="append", default=[], help="NAME=PATH of an lb-proxy build")
    args = ap.parse_args()
    bins = [b.split("=", 1) for b in args.bin] or [
        ("lb", os.path.join(HERE, "..", "..", "target", "release", "lb-proxy"))
    ]
    if not shutil.which("curl"):
        sys.exit("curl is needed (apt-get install curl)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server = EchoServer(BACKEND, Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="lb-admin-stall-")
    results = {}
    try:
        for name, path in bins:
            admin_port = free_port(ADMIN_HOST)
            conf = os.path.join(work, name + ".toml")
            with open(conf, "w") as f:
                f.write(config(args.services, admin_port))
            log = open(os.path.join(work, name + ".log"), "w")
            proxy = subprocess.Popen([path, "run", "--config", conf], stdout=log, stderr=log)
            try:
                target = (vip(0), 80)
                if not wait_connect(target, 120) or not wait_connect((ADMIN_HOST, admin_port), 30):
                    sys.exit("%s did not start; see %s" % (name, log.name))
                # Warm up: the first scrape and a few connections.
                subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "30",
                                "http://%s:%d/metrics" % (ADMIN_HOST, admin_port)], check=False)
                probe(target, args.rate, 2)
                for _ in range(args.rounds):
                    for phase in ("quiet", "busy"):
                        procs = load(admin_port) if phase == "busy" else []
                        try:
                            samples, failed = probe(target, args.rate, args.phase)
                        finally:
                            stop(procs)
                        r = results.setdefault((name, phase), {"samples": [], "failed": 0})
                        r["samples"] += samples
                        r["failed"] += failed
            finally:
                proxy.send_signal(signal.SIGKILL)
                proxy.wait(timeout=10)
                log.close()
    finally:
        server.shutdown()

    print("%d services; probe %d connections/s; %d rounds of %d s quiet + %d s busy" %
          (args.services, args.rate, args.rounds, args.phase, args.phase))
    print("%-8s %-6s %7s %9s %9s %9s %7s" % ("build", "phase", "samples", "p50 ms", "p99 ms", "max ms", "failed"))
    for name, _ in bins:
        for phase in ("quiet", "busy"):
            r = results[(name, phase)]
            xs = r["samples"]
            print("%-8s %-6s %7d %9.2f %9.2f %9.2f %7d" % (
                name, phase, len(xs), 1e3 * statistics.median(xs), 1e3 * pct(xs, 0.99),
                1e3 * max(xs), r["failed"]))
        quiet = pct(results[(name, "quiet")]["samples"], 0.99)
        busy = pct(results[(name, "busy")]["samples"], 0.99)
        print("%-8s busy/quiet p99: %.2fx" % (name, busy / quiet))


if __name__ == "__main__":
    main()
