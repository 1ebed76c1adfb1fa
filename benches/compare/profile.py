#!/usr/bin/env python3
"""Deterministic per-connection profile of lb-proxy (and, for syscalls and
memory, HAProxy and nginx stream): figures that do not depend on how busy the
machine is, unlike run.py's wall-clock rates.

    profile.py syscalls  [--targets lb,haproxy,nginx,naive] [--conns 2000] [--requests 1]
        strace -f -c attached to the proxy while a client makes --conns
        `Connection: close` requests (1 KiB answer) one after another;
        prints system calls per connection, by call. With --requests R > 1,
        each connection carries R keep-alive requests and the figures are
        per request.
    profile.py callgrind [--conns 2000] [--targets lb|naive]
        lb-proxy (or the naive proxy) under valgrind --tool=callgrind twice (--conns / 5 and
        --conns connections); the difference of the instruction counts
        divided by the difference of connections is the per-connection cost
        (start-up and shutdown cancel out). Keeps the larger run's output for
        callgrind_annotate.
    profile.py heap      [--conns 2000] [--targets lb|naive]
        the same two runs under heaptrack: allocation calls per connection.
    profile.py load      [--targets lb,naive,haproxy,nginx] [--duration 4] [--wrk-conns 32]
        the same counts under concurrency: `wrk -c --wrk-conns -t 1` with
        `Connection: close` for --duration seconds while `perf stat` counts the
        proxy's system calls, context switches (wake-ups), futex calls,
        migrations and CPU time; all divided by the connections wrk
        completed. Counts, not rates: the machine's noise moves how wake-ups
        fall, not what each connection costs. One target at a time, each
        --rounds times, interleaved; medians.
    profile.py idle      [--targets lb,haproxy,nginx] [--idle 4000]
        resident memory added per idle proxied connection (RSS of the
        proxy's processes before and after --idle connections are held).

lb-proxy is target/profiling/lb-proxy (`cargo build --profile profiling -p
lb-proxy`: the release build with debug info) unless --lb-bin says otherwise.
The naive proxy (`examples/naive_proxy.rs`: tokio's copy_bidirectional per
connection, the floor run.py measures lb against) is
target/profiling/examples/naive_proxy (`cargo build --profile profiling -p
lb-examples --example naive_proxy`) unless --naive-bin says otherwise.

Addresses: backends on 127.0.60.1, lb on 127.0.61.1, HAProxy on 127.0.62.1,
nginx on 127.0.63.1, naive on 127.0.64.1 (run.py uses 127.0.50-53, so both can coexist). Every
step is bounded in time and every address is on loopback.
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (shares config rendering, pids_of, rss_kib)

BACKEND = "127.0.60.1"
VIPS = {"lb": "127.0.61.1", "haproxy": "127.0.62.1", "nginx": "127.0.63.1",
        "naive": "127.0.64.1"}
HOLD_PORTS = {"lb": 9101, "haproxy": 9102, "nginx": 9103, "naive": 9104}
REQUEST = b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
KA_REQUEST = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"


def keepalive(ip, port, conns, requests, bound=600.0):
    """`requests` keep-alive requests on each of `conns` connections, one
    after another; returns how many got a whole answer."""
    done = 0
    end = time.monotonic() + bound
    for _ in range(conns):
        s = socket.create_connection((ip, port), timeout=10)
        try:
            for _ in range(requests):
                if time.monotonic() > end:
                    return done
                s.sendall(KA_REQUEST)
                data = b""
                while b"\r\n\r\n" not in data:
                    b = s.recv(4096)
                    if not b:
                        raise OSError("closed mid-answer")
                    data += b
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
                while len(body) < length:
                    b = s.recv(4096)
                    if not b:
                        raise OSError("closed mid-answer")
                    body += b
                done += 1
        finally:
            s.close()
    return done


def client(ip, port, n, concurrency=1, bound=600.0):
    """n `Connection: close` requests; returns how many got a whole answer."""
    done = [0]
    lock = threading.Lock()
    end = time.monotonic() + bound

    def worker(share):
        for _ in range(share):
            if time.monotonic() > end:
                return
            s = socket.socket()
            s.settimeout(10)
            try:
                s.connect((ip, port))
                s.sendall(REQUEST)
                got = 0
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    got += len(b)
                if got > 1024:
                    with lock:
                        done[0] += 1
            except OSError as e:
                print("client:", e, file=sys.stderr)
            finally:
                s.close()

    threads = [threading.Thread(target=worker, args=(n // concurrency + (k < n % concurrency),))
               for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0]


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="lb-profile-")
        self.procs = {}
        self.threads = args.threads
        self.sub = dict(DIR=self.dir, BACKEND=BACKEND, THREADS=self.threads, NOFILE=run.NOFILE,
                        MAXCONN=(run.NOFILE - 1000) // 2)

    def spawn(self, name, cmd, env=None):
        log = open(os.path.join(self.dir, name + ".log"), "w")
        p = subprocess.Popen(["prlimit", run.LIMIT] + cmd, stdout=log, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        self.procs[name] = p
        return p

    def backends(self):
        d = self.dir
        for ip in [BACKEND] + list(VIPS.values()):
            for port in (80, 8080, 9000):
                if run.wait_port(ip, port, 0.2):
                    sys.exit("%s:%d is already in use: stop what listens there first" % (ip, port))
        run.nginx_backend(d, self.sub, self.spawn)
        self.spawn("hold", [sys.executable, os.path.join(HERE, "hold.py"), "serve", BACKEND]
                   + [str(p) for p in HOLD_PORTS.values()])
        for port in (8080, HOLD_PORTS["lb"]):
            if not run.wait_port(BACKEND, port):
                sys.exit("backend on %s:%d did not come up" % (BACKEND, port))

    def proxy(self, name, wrapper=None):
        """Starts one proxy (optionally under `wrapper`, e.g. valgrind)."""
        d = self.dir
        if name == "lb":
            conf = run.render("lb.toml.in", os.path.join(d, "lb.toml"), VIP=VIPS["lb"],
                              HOLD_PORT=HOLD_PORTS["lb"], **self.sub)
            conf_text = open(conf).read().replace("127.0.51.0/24", "127.0.61.0/24")
            open(conf, "w").write(conf_text)
            env = dict(os.environ, RUST_LOG="warn")
            if self.args.engine:
                env["LB_FORWARD_ENGINE"] = self.args.engine
            if self.threads:
                env["TOKIO_WORKER_THREADS"] = str(self.threads)
            cmd = (wrapper or []) + [self.args.lb_bin, "--config", conf]
            p = self.spawn(name, cmd, env=env)
        elif name == "haproxy":
            conf = run.render("haproxy.cfg.in", os.path.join(d, "haproxy.cfg"), VIP=VIPS[name],
                              HOLD_PORT=HOLD_PORTS[name], **self.sub)
            p = self.spawn(name, ["haproxy", "-db", "-f", conf])
        elif name == "naive":
            env = dict(os.environ)
            if self.threads:
                env["TOKIO_WORKER_THREADS"] = str(self.threads)
            vip = VIPS[name]
            p = self.spawn(name, (wrapper or []) + [
                self.args.naive_bin, "%s:80=%s:8080" % (vip, BACKEND),
                "%s:9000=%s:%d" % (vip, BACKEND, HOLD_PORTS[name])], env=env)
        else:
            conf = run.render("nginx-stream.conf.in", os.path.join(d, "nginx-stream.conf"),
                              VIP=VIPS[name], HOLD_PORT=HOLD_PORTS[name], **self.sub)
            p = self.spawn(name, ["nginx", "-p", d, "-c", conf])
        if not run.wait_port(VIPS[name], 80, 120.0):
            sys.exit("%s did not come up; see %s/%s.log" % (name, d, name))
        time.sleep(0.5)
        return p

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        # Under heaptrack the proxy is a child of heaptrack's script: signal
        # only the proxy, so the recorder can finish writing its file.
        target = [q for q in run.pids_of(p.pid)
                  if comm(q).startswith("lb-proxy") or comm(q).startswith("naive_proxy")]
        if target and target[0] != p.pid:
            os.kill(target[0], signal.SIGTERM)
        else:
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def close(self):
        for name in list(self.procs):
            self.stop(name)
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def proxy_pid(b, name):
    """The proxy's own pid (below prlimit, which execs; below valgrind too)."""
    return b.procs[name].pid


def syscalls(b, args):
    out = {}
    for name in args.targets:
        b.proxy(name)
        client(VIPS[name], 80, 50)  # warm up (pipes, pools, arenas)
        pids = run.pids_of(proxy_pid(b, name))
        trace = os.path.join(b.dir, "strace-%s.txt" % name)
        cmd = ["strace", "-f", "-c", "-o", trace]
        for p in pids:
            cmd += ["-p", str(p)]
        st = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        t0 = time.monotonic()
        if args.requests > 1:
            ok = keepalive(VIPS[name], 80, args.conns, args.requests)
        else:
            ok = client(VIPS[name], 80, args.conns, args.concurrency)
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        st.send_signal(signal.SIGINT)
        st.wait(timeout=60)
        b.stop(name)
        calls = parse_strace(open(trace).read())
        out[name] = (ok, calls)
        print("%s: %d %s in %.1f s under strace"
              % (name, ok, "requests" if args.requests > 1 else "connections", elapsed), flush=True)
    names = sorted({c for _, calls in out.values() for c in calls},
                   key=lambda c: -max(calls.get(c, 0) / max(ok, 1) for ok, calls in out.values()))
    print("\n| system call | " + " | ".join(args.targets) + " |")
    print("|---|" + "---|" * len(args.targets))
    for c in names:
        print("| %s | %s |" % (c, " | ".join("%.2f" % (out[t][1].get(c, 0) / max(out[t][0], 1))
                                            for t in args.targets)))
    print("| **total** | %s |" % " | ".join(
        "**%.2f**" % (sum(out[t][1].values()) / max(out[t][0], 1)) for t in args.targets))


def parse_strace(text):
    calls = {}
    for line in text.splitlines():
        f = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
            try:
                calls[f[-1]] = int(f[3])
            except ValueError:
                pass
    return calls


def two_runs(b, args, tool):
    """Runs lb-proxy (or the one proxy --targets names: lb or naive) under
    `tool` for conns/5 and conns connections; returns [(connections, output
    file)]."""
    name = args.targets[0]
    if len(args.targets) != 1 or name not in ("lb", "naive"):
        sys.exit("%s measures one of lb or naive at a time (--targets lb|naive)" % tool)
    runs = []
    for n in (args.conns // 5, args.conns):
        outf = os.path.join(b.dir, "%s.%d" % (tool, n))
        if tool == "callgrind":
            wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + outf]
        else:
            wrapper = ["heaptrack", "-o", outf]
        b.proxy(name, wrapper)
        ok = client(VIPS[name], 80, n, args.concurrency)
        time.sleep(0.5)
        b.stop(name)
        if tool == "heaptrack":
            cands = [f for f in os.listdir(b.dir) if f.startswith("heaptrack.%d" % n)]
            outf = os.path.join(b.dir, cands[0]) if cands else outf
        runs.append((ok, outf))
        print("%s: %d connections -> %s" % (tool, ok, outf), flush=True)
    return runs


def callgrind(b, args):
    runs = two_runs(b, args, "callgrind")
    totals = []
    for ok, f in runs:
        m = re.search(r"^summary:\s+(\d+)", open(f).read(), re.M) or \
            re.search(r"^totals:\s+(\d+)", open(f).read(), re.M)
        totals.append((ok, int(m.group(1))))
    (n1, i1), (n2, i2) = totals
    print("instructions per connection: %.0f (%d -> %d instructions, %d -> %d connections)"
          % ((i2 - i1) / max(n2 - n1, 1), i1, i2, n1, n2))
    if args.keep:
        print("annotate: callgrind_annotate --inclusive=yes %s | head -60" % runs[1][1])


def heap(b, args):
    runs = two_runs(b, args, "heaptrack")
    counts = []
    for ok, f in runs:
        r = run.sh(["heaptrack_print", "-f", f, "-T", "-s", "0"], 300)
        m = re.search(r"calls to allocation functions: (\d+)", r.stdout)
        t = re.search(r"temporary memory allocations: (\d+)", r.stdout)
        counts.append((ok, int(m.group(1)) if m else 0, int(t.group(1)) if t else 0))
    (n1, a1, t1), (n2, a2, t2) = counts
    print("allocation calls per connection: %.2f (temporary: %.2f)"
          % ((a2 - a1) / max(n2 - n1, 1), (t2 - t1) / max(n2 - n1, 1)))
    if args.keep:
        print("details: heaptrack_print -f %s | less" % runs[1][1])


def machine_busy_seconds():
    """Seconds of CPU time every core spent busy since boot (/proc/stat:
    all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


LOAD_EVENTS = ["task-clock", "context-switches", "cpu-migrations", "raw_syscalls:sys_enter",
               "syscalls:sys_enter_futex", "syscalls:sys_enter_epoll_wait",
               "syscalls:sys_enter_accept4", "syscalls:sys_enter_epoll_ctl"]


def load(b, args):
    for tool in ("wrk", "perf"):
        if not shutil.which(tool):
            sys.exit("missing %s (apt-get install wrk linux-perf)" % tool)
    events = [e for e in LOAD_EVENTS if ":" not in e
              or os.path.isdir("/sys/kernel/tracing/events/" + e.replace(":", "/"))]
    rows = {t: [] for t in args.targets}
    for name in args.targets:
        b.proxy(name)
    try:
        for rnd in range(args.rounds):
            for name in args.targets:
                client(VIPS[name], 80, 50)
                pids = run.pids_of(proxy_pid(b, name))
                out = os.path.join(b.dir, "perf-%s-%d.csv" % (name, rnd))
                perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-e", ",".join(events),
                                         "-p", ",".join(str(p) for p in pids)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.3)
                busy0 = machine_busy_seconds()
                w = run.sh(["wrk", "-t1", "-c%d" % args.wrk_conns, "-d%ds" % args.duration,
                            "-H", "Connection: close", "http://%s:80/index.html" % VIPS[name]],
                           args.duration + 30)
                busy = machine_busy_seconds() - busy0
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=30)
                m = re.search(r"(\d+) requests in", w.stdout)
                conns = int(m.group(1)) if m else 0
                errors = re.search(r"Socket errors: (.*)", w.stdout)
                counts = {}
                for line in open(out):
                    f = line.strip().split(",")
                    if len(f) >= 3 and f[2] in events:
                        try:
                            counts[f[2]] = float(f[0])
                        except ValueError:
                            pass
                # The whole machine's busy time (every process, softirqs
                # included) over wrk's run: what the proxy makes the client,
                # the backend and the kernel do as well as its own share.
                counts["machine"] = busy * 1e6
                rows[name].append((conns, counts))
                print("round %d %s: %d connections%s" % (rnd + 1, name, conns,
                      (", errors " + errors.group(1)) if errors else ""), flush=True)
    finally:
        for name in args.targets:
            b.stop(name)

    def per(name, ev, scale=1.0):
        vals = sorted(c.get(ev, 0) * scale / max(n, 1) for n, c in rows[name])
        return vals[len(vals) // 2] if vals else float("nan")

    print("\n| per connection, wrk -c%d close, median of %d | %s |"
          % (args.wrk_conns, args.rounds, " | ".join(args.targets)))
    print("|---|" + "---|" * len(args.targets))
    print("| connections/s | %s |" % " | ".join(
        "%.0f" % sorted(n / args.duration for n, _ in rows[t])[len(rows[t]) // 2] for t in args.targets))
    print("| whole machine's CPU µs (proxy, wrk, backend, softirqs) | %s |"
          % " | ".join("%.2f" % per(t, "machine") for t in args.targets))
    labels = {"task-clock": ("CPU µs (task-clock)", 1e3), "context-switches": ("context switches", 1),
              "cpu-migrations": ("migrations", 1), "raw_syscalls:sys_enter": ("system calls", 1)}
    for ev in events:
        label, scale = labels.get(ev, (ev.split("sys_enter_")[-1], 1))
        print("| %s | %s |" % (label, " | ".join("%.2f" % per(t, ev, scale) for t in args.targets)))


def idle(b, args):
    print("| idle proxied connections: %d | %s |" % (args.idle, " | ".join(args.targets)))
    rows = {}
    for name in args.targets:
        p = b.proxy(name)
        client(VIPS[name], 80, 50)
        pid = proxy_pid(b, name)
        before = run.rss_kib(pid)
        holder = subprocess.Popen(["prlimit", run.LIMIT, sys.executable, os.path.join(HERE, "hold.py"),
                                   "connect", VIPS[name], "9000", str(args.idle)],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        opened = int(holder.stdout.readline() or 0)
        end = time.monotonic() + 60
        while time.monotonic() < end and run.established(HOLD_PORTS[name]) < opened:
            time.sleep(0.5)
        time.sleep(1)
        after = run.rss_kib(pid)
        rows[name] = (before, after, opened)
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(timeout=10)
        b.stop(name)
        del p
    print("|---|" + "---|" * len(args.targets))
    print("| RSS before (KiB) | %s |" % " | ".join(str(rows[t][0]) for t in args.targets))
    print("| RSS held (KiB) | %s |" % " | ".join(str(rows[t][1]) for t in args.targets))
    print("| bytes per connection | %s |" % " | ".join(
        "%.0f" % ((rows[t][1] - rows[t][0]) * 1024 / max(rows[t][2], 1)) for t in args.targets))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("measure", choices=["syscalls", "callgrind", "heap", "load", "idle"])
    ap.add_argument("--targets", default="lb")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=1,
                    help="syscalls: keep-alive requests per connection (figures are then per request)")
    ap.add_argument("--idle", type=int, default=4000)
    ap.add_argument("--duration", type=int, default=4, help="load: seconds of wrk per round")
    ap.add_argument("--wrk-conns", type=int, default=32, help="load: wrk's concurrent connections")
    ap.add_argument("--rounds", type=int, default=3, help="load: rounds (targets interleaved)")
    ap.add_argument("--threads", type=int, default=2, help="proxy threads/workers (tokio workers for lb)")
    ap.add_argument("--engine", choices=["copy", "splice", "auto"])
    # The release build with debug info (the release profile ships without it), so
    # callgrind_annotate and heaptrack name functions and lines.
    ap.add_argument("--lb-bin", default=os.path.join(HERE, "..", "..", "target", "profiling", "lb-proxy"),
                    help="cargo build --profile profiling -p lb-proxy")
    ap.add_argument("--naive-bin", default=os.path.join(HERE, "..", "..", "target", "profiling", "examples",
                                                        "naive_proxy"),
                    help="cargo build --profile profiling -p lb-examples --example naive_proxy")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    args.targets = [t for t in args.targets.split(",") if t]
    b = Bench(args)
    try:
        b.backends()
        {"syscalls": syscalls, "callgrind": callgrind, "heap": heap, "load": load,
         "idle": idle}[args.measure](b, args)
    finally:
        b.close()
        if args.keep:
            print("work dir:", b.dir)


if __name__ == "__main__":
    main()
