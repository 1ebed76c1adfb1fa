#!/usr/bin/env python3
"""Side-by-side comparison of lb-proxy, HAProxy and nginx (stream) on one machine.

Starts real backends on 127.0.50.1 (nginx serving a 1 KiB file on :8080,
`iperf3 -s` on :5201, a connection holder for the memory test), then the three
proxies, each on its own loopback address in front of the same backends:

    direct   127.0.50.1  (the backends themselves: the ceiling)
    lb       127.0.51.1  lb-proxy (release build)
    haproxy  127.0.52.1  HAProxy, mode tcp, option splice-auto, nbthread = cores
    nginx    127.0.53.1  nginx stream, worker_processes = cores
    naive    127.0.55.1  examples/naive_proxy.rs: tokio's copy_bidirectional per
                         connection, no balancing (the floor lb's per-connection
                         work is measured against)

and runs interleaved rounds (the order of targets rotates every round) of:

    iperf1   iperf3, one stream              Gbit/s
    iperf4   iperf3, four streams            Gbit/s
    close    wrk, `Connection: close`        new connections/s and p99 latency
    ka       wrk, keep-alive                 requests/s and p99 latency

It prints medians, ratios lb / best peer and lb / direct, CPU seconds of each
proxy per GB and per 1,000 connections (from /proc/PID/stat), and resident
memory of each proxy holding --idle idle proxied connections (10,000, or
as many as the hard RLIMIT_NOFILE allows: each takes two descriptors). Every step is bounded in time;
every address is on loopback. Not part of .ci/run: this is a benchmark.

    sudo benches/compare/run.py --rounds 5 --duration 5 [--pin] [--engine splice]

--proxy-protocol v2 makes lb (`proxy_protocol = "v2"`), HAProxy
(`send-proxy-v2`) and nginx (`proxy_protocol on`) send a PROXY v2 header to
the HTTP backend, which then listens with `proxy_protocol` on :8081 (direct
and naive still go to :8080 without one, as references); with it only the
close and ka tests run.

--alt-env KEY=VALUE[,KEY=VALUE] adds a second lb-proxy, "lb-alt" on
127.0.54.1, started with those environment variables (for example
LB_ACCEPT=percore), and --alt-bin PATH runs another build there, so that two
settings or two builds are compared in the same run.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = "127.0.50.1"
TARGETS = {"direct": BACKEND, "lb": "127.0.51.1", "haproxy": "127.0.52.1", "nginx": "127.0.53.1",
           "naive": "127.0.55.1"}
PROXIES = ["lb", "haproxy", "nginx", "naive"]
HOLD_PORTS = {"lb": 9001, "haproxy": 9002, "nginx": 9003, "naive": 9005}
TESTS = ["iperf1", "iperf4", "close", "ka"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Every process gets the hard RLIMIT_NOFILE (raise it first with `ulimit -Hn`
# where the container allows; without CAP_SYS_RESOURCE it stays as it is).
import resource
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
LIMIT = "--nofile=%d:%d" % (NOFILE, NOFILE)


def sh(cmd, timeout, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def render(name, dest, **subst):
    text = open(os.path.join(HERE, name)).read()
    for k, v in subst.items():
        text = text.replace("@%s@" % k, str(v))
    open(dest, "w").write(text)
    return dest


def pids_of(pid):
    """pid and all its descendants (nginx workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid):
    total = 0
    for p in pids_of(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK_TCK


def rss_kib(pid):
    """Resident memory of `pid` and its descendants, in KiB."""
    return rss_kib_of(pids_of(pid))


def rss_kib_of(pids):
    """Resident memory of the processes `pids`, in KiB."""
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def recv_all(s):
    """Everything the peer sends on socket `s` until it closes."""
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            return data
        data += b


def nginx_backend(d, sub, spawn):
    """The 1 KiB-page nginx backend of the comparisons, in work dir `d`
    (`sub`: the template's substitutions; `spawn(name, argv)` starts it)."""
    os.makedirs(os.path.join(d, "www"))
    os.makedirs(os.path.join(d, "tmp"))
    with open(os.path.join(d, "www", "index.html"), "w") as f:
        f.write("x" * 1023 + "\n")
    render("nginx-backend.conf.in", os.path.join(d, "nginx-backend.conf"), **sub)
    spawn("backend", ["nginx", "-p", d, "-c", os.path.join(d, "nginx-backend.conf")])


def wait_port(addr, port, bound=10.0):
    import socket
    end = time.monotonic() + bound
    while time.monotonic() < end:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect((addr, port))
            s.close()
            return True
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    return False


def established(port):
    r = sh(["ss", "-Htn", "state", "established", "( sport = :%d )" % port], 10)
    return len(r.stdout.splitlines())


class Harness:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="lb-compare-")
        self.procs = {}
        cores = os.cpu_count() or 1
        self.threads = 1 if args.pin else cores
        self.proxy_cpu = ["taskset", "-c", "0"] if args.pin else []
        self.load_cpu = ["taskset", "-c", "1"] if args.pin else []

    def spawn(self, name, cmd, env=None, cpu=None):
        log = open(os.path.join(self.dir, name + ".log"), "w")
        full = ["prlimit", LIMIT] + (cpu or []) + cmd
        self.procs[name] = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        return self.procs[name]

    def start(self):
        d = self.dir
        for ip in TARGETS.values():
            for port in (80, 8080, 5201):
                if wait_port(ip, port, 0.2):
                    sys.exit("%s:%d is already in use: stop what listens there first" % (ip, port))
        os.makedirs(os.path.join(d, "www"))
        os.makedirs(os.path.join(d, "tmp"))
        with open(os.path.join(d, "www", "index.html"), "w") as f:
            f.write("x" * 1023 + "\n")
        sub = dict(DIR=d, BACKEND=BACKEND, THREADS=self.threads, NOFILE=NOFILE,
                   MAXCONN=(NOFILE - 1000) // 2)
        render("nginx-backend.conf.in", os.path.join(d, "nginx-backend.conf"), **sub)
        self.spawn("backend", ["nginx", "-p", d, "-c", os.path.join(d, "nginx-backend.conf")],
                   cpu=self.load_cpu)
        self.spawn("iperf3", ["iperf3", "-s", "-B", BACKEND, "-p", "5201"], cpu=self.load_cpu)
        self.spawn("hold", [sys.executable, os.path.join(HERE, "hold.py"), "serve", BACKEND]
                   + [str(p) for p in HOLD_PORTS.values()], cpu=self.load_cpu)
        for port in (8080, 5201, 9001):
            if not wait_port(BACKEND, port):
                sys.exit("backend on %s:%d did not come up" % (BACKEND, port))

        lb_conf = render("lb.toml.in", os.path.join(d, "lb.toml"), VIP=TARGETS["lb"],
                         HOLD_PORT=HOLD_PORTS["lb"], **sub)
        self.proxy_protocol(lb_conf, "lb")
        # Each lb its own node lock directory: lb and lb-alt serve the same
        # node name side by side.
        env = dict(os.environ, RUST_LOG="warn", LB_RUNTIME_DIR=os.path.join(d, "run-lb"))
        if self.args.engine:
            env["LB_FORWARD_ENGINE"] = self.args.engine
        self.spawn("lb", [self.args.lb_bin, "--config", lb_conf], env=env, cpu=self.proxy_cpu)
        if "lb-alt" in TARGETS:
            alt_conf = render("lb.toml.in", os.path.join(d, "lb-alt.toml"), VIP=TARGETS["lb-alt"],
                              HOLD_PORT=HOLD_PORTS["lb-alt"], **sub)
            self.proxy_protocol(alt_conf, "lb")
            alt_env = dict(env, LB_RUNTIME_DIR=os.path.join(d, "run-lb-alt"))
            for kv in (self.args.alt_env or "").split(","):
                if not kv.strip():
                    continue
                k, _, v = kv.partition("=")
                alt_env[k.strip()] = v.strip()
            self.spawn("lb-alt", [self.args.alt_bin or self.args.lb_bin, "--config", alt_conf], env=alt_env,
                       cpu=self.proxy_cpu)
        ha_conf = render("haproxy.cfg.in", os.path.join(d, "haproxy.cfg"), VIP=TARGETS["haproxy"],
                         HOLD_PORT=HOLD_PORTS["haproxy"], **sub)
        self.proxy_protocol(ha_conf, "haproxy")
        self.spawn("haproxy", ["haproxy", "-db", "-f", ha_conf], cpu=self.proxy_cpu)
        ng_conf = render("nginx-stream.conf.in", os.path.join(d, "nginx-stream.conf"),
                         VIP=TARGETS["nginx"], HOLD_PORT=HOLD_PORTS["nginx"], **sub)
        self.proxy_protocol(ng_conf, "nginx")
        self.spawn("nginx", ["nginx", "-p", d, "-c", ng_conf], cpu=self.proxy_cpu)
        naive = TARGETS["naive"]
        self.spawn("naive", [self.args.naive_bin,
                             "%s:80=%s:8080" % (naive, BACKEND),
                             "%s:5201=%s:5201" % (naive, BACKEND),
                             "%s:9000=%s:%d" % (naive, BACKEND, HOLD_PORTS["naive"])],
                   env=dict(os.environ, TOKIO_WORKER_THREADS=str(self.threads)), cpu=self.proxy_cpu)
        for name in PROXIES:
            if not wait_port(TARGETS[name], 80):
                sys.exit("%s did not come up; see %s/%s.log" % (name, d, name))
        time.sleep(0.5)
        for name, p in self.procs.items():
            if p.poll() is not None:
                sys.exit("%s exited at start; see %s/%s.log" % (name, d, name))

    def proxy_protocol(self, conf, kind):
        """With --proxy-protocol v2: rewrites a rendered config so that its
        HTTP service sends a v2 header to the backend's :8081."""
        if not self.args.proxy_protocol:
            return
        text = open(conf).read()
        if kind == "lb":
            edits = [('{ name = "http", container_port = 8080 }', '{ name = "http", container_port = 8081 }'),
                     ('[[services]]\nname = "backend"\n', '[[services]]\nname = "backend"\nproxy_protocol = "v2"\n')]
        elif kind == "haproxy":
            edits = [("server b1 %s:8080" % BACKEND, "server b1 %s:8081 send-proxy-v2" % BACKEND)]
        else:
            edits = [("proxy_pass %s:8080;" % BACKEND, "proxy_pass %s:8081; proxy_protocol on;" % BACKEND)]
        for old, new in edits:
            if old not in text:
                sys.exit("--proxy-protocol: %r not found in %s" % (old, conf))
            text = text.replace(old, new)
        open(conf, "w").write(text)

    def stop(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- one measurement ---

    def run_test(self, test, target):
        ip = TARGETS[target]
        port = 8080 if target == "direct" else 80
        dur = self.args.duration
        pid = self.procs[target].pid if target in PROXIES else None
        cpu0 = cpu_seconds(pid) if pid else 0.0
        res = {}
        if test.startswith("iperf"):
            streams = "1" if test == "iperf1" else "4"
            r = sh(self.load_cpu + ["iperf3", "-c", ip, "-p", "5201", "-t", str(dur), "-P", streams,
                    "-J"], dur + 30)
            j = json.loads(r.stdout)
            if "error" in j:
                raise RuntimeError(j["error"])
            s = j["end"]["sum_received"]
            res = {"value": s["bits_per_second"] / 1e9, "bytes": s["bytes"]}
        else:
            cmd = ["wrk", "-t1", "-c%d" % self.args.wrk_conns, "-d%ds" % dur, "--latency"]
            if test == "close":
                cmd += ["-H", "Connection: close"]
            r = sh(self.load_cpu + cmd + ["http://%s:%d/index.html" % (ip, port)], dur + 30)
            out = r.stdout
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            reqs = int(re.search(r"(\d+) requests in", out).group(1))
            p99 = parse_latency(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
            errs = re.search(r"Socket errors: (.*)", out)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            res = {"value": rps, "requests": reqs, "p99_ms": p99,
                   "errors": (errs.group(1) if errs else "") + (" non2xx=" + non2xx.group(1) if non2xx else "")}
        if pid:
            cpu = cpu_seconds(pid) - cpu0
            res["cpu"] = cpu
            if "bytes" in res:
                res["cpu_per_gb"] = cpu / (res["bytes"] / 1e9)
            if test == "close":
                res["cpu_per_1k"] = cpu / (res["requests"] / 1000)
        return res

    def rounds(self):
        order = list(TARGETS)
        results = {t: {k: [] for k in TARGETS} for t in TESTS}
        for r in range(self.args.rounds):
            rot = order[r % len(order):] + order[:r % len(order)]
            for test in self.args.tests:
                for target in rot:
                    try:
                        res = self.run_test(test, target)
                    except Exception as e:  # one failed run is reported, not fatal
                        print("  round %d %s %s failed: %s" % (r + 1, test, target, e), flush=True)
                        continue
                    results[test][target].append(res)
                    extra = ""
                    if "p99_ms" in res:
                        extra = " p99 %.2f ms" % res["p99_ms"]
                    if res.get("errors"):
                        extra += " errors: " + res["errors"]
                    print("  round %d %-6s %-8s %10.2f%s" % (r + 1, test, target, res["value"], extra),
                          flush=True)
                    time.sleep(0.3)
        return results

    def memory(self, n):
        out = {}
        for name in PROXIES:
            pid = self.procs[name].pid
            before = rss_kib(pid)
            client = subprocess.Popen(["prlimit", LIMIT] + self.load_cpu
                                      + [sys.executable, os.path.join(HERE, "hold.py"), "connect",
                                         TARGETS[name], "9000", str(n)],
                                      stdout=subprocess.PIPE, text=True, start_new_session=True)
            opened = int(client.stdout.readline() or 0)
            end = time.monotonic() + 60
            held = 0
            while time.monotonic() < end:
                held = established(HOLD_PORTS[name])
                if held >= opened:
                    break
                time.sleep(0.5)
            time.sleep(1)
            after = rss_kib(pid)
            out[name] = {"opened": opened, "held_at_backend": held, "rss_before_kib": before,
                         "rss_kib": after, "per_conn_bytes": (after - before) * 1024 / max(opened, 1)}
            print("  memory %-8s %d connections: RSS %d KiB (was %d KiB)"
                  % (name, opened, after, before), flush=True)
            os.killpg(client.pid, signal.SIGTERM)
            client.wait(timeout=10)
            end = time.monotonic() + 60
            while time.monotonic() < end and established(HOLD_PORTS[name]) > 0:
                time.sleep(0.5)
        return out


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(results, mem, args):
    lines = []
    p = lines.append
    p("")
    p("medians over %d interleaved rounds of %d s (pinned: %s, lb engine: %s)"
      % (args.rounds, args.duration, args.pin, args.engine or "default"))
    rows = [("iperf1", "value", "Gbit/s, 1 stream", True), ("iperf4", "value", "Gbit/s, 4 streams", True),
            ("close", "value", "new conns/s", True), ("close", "p99_ms", "p99 ms, close", False),
            ("ka", "value", "req/s keep-alive", True), ("ka", "p99_ms", "p99 ms, keep-alive", False),
            ("iperf1", "cpu_per_gb", "CPU s/GB, 1 stream", False),
            ("iperf4", "cpu_per_gb", "CPU s/GB, 4 streams", False),
            ("close", "cpu_per_1k", "CPU s/1k conns", False)]
    lbs = [t for t in ("lb", "lb-alt") if t in TARGETS]
    cols = ["direct"] + lbs + ["haproxy", "nginx", "naive"]
    p("| figure | %s | %s |" % (" | ".join(cols), " | ".join(
        "%s / best peer | %s / naive | %s / direct" % (t, t, t) for t in lbs)))
    p("|---|" + "---|" * (len(cols) + 3 * len(lbs)))
    for test, key, label, higher in rows:
        if test not in args.tests:
            continue
        m = {t: med([r[key] for r in results[test][t] if key in r]) for t in TARGETS}
        peers = [m["haproxy"], m["nginx"]]
        peers = [x for x in peers if x == x]
        best = (max(peers) if higher else min(peers)) if peers else float("nan")
        fmt = lambda x: "-" if x != x else ("%.3f" % x if x < 10 else "%.0f" % x)
        ratios = []
        for t in lbs:
            ratio = m[t] / best if best else float("nan")
            naive = m[t] / m["naive"] if m["naive"] == m["naive"] and m["naive"] else float("nan")
            direct = m[t] / m["direct"] if m["direct"] == m["direct"] and m["direct"] else float("nan")
            ratios.append("%.2f%s | %s | %s" % (
                ratio, "" if higher else " (lower is better)",
                "-" if naive != naive else "%.2f" % naive,
                "-" if direct != direct or key.startswith("cpu") else "%.2f" % direct))
        p("| %s | %s | %s |" % (label, " | ".join(fmt(m[t]) for t in cols), " | ".join(ratios)))
    if mem:
        p("")
        p("| resident memory, %d idle proxied connections | %s |" % (args.idle, " | ".join(PROXIES)))
        p("|---|" + "---|" * len(PROXIES))
        p("| RSS (MiB) | %s |" % " | ".join("%.1f" % (mem[n]["rss_kib"] / 1024) for n in PROXIES))
        p("| added per connection (bytes) | %s |" % " | ".join(
            "%.0f" % mem[n]["per_conn_bytes"] for n in PROXIES))
        p("| connections held at the backend | %s |" % " | ".join(
            str(mem[n]["held_at_backend"]) for n in PROXIES))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per run")
    ap.add_argument("--pin", action="store_true", help="proxies on CPU 0, load and backends on CPU 1")
    ap.add_argument("--engine", choices=["copy", "splice", "auto"], help="LB_FORWARD_ENGINE for lb-proxy")
    ap.add_argument("--wrk-conns", type=int, default=32)
    ap.add_argument("--idle", type=int, default=min(10000, (NOFILE - 2000) // 2),
                    help="idle connections for the memory test (0: skip); each costs the proxy two "
                    "descriptors, so the default is 10,000 or what the hard RLIMIT_NOFILE allows")
    ap.add_argument("--tests", default=",".join(TESTS))
    ap.add_argument("--lb-bin", default=os.path.join(HERE, "..", "..", "target", "release", "lb-proxy"))
    ap.add_argument("--naive-bin", default=os.path.join(HERE, "..", "..", "target", "release", "examples",
                                                         "naive_proxy"))
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--alt-env", help="KEY=VALUE[,KEY=VALUE]: also run lb-proxy as lb-alt with these")
    ap.add_argument("--alt-bin", help="also run this lb-proxy binary as lb-alt (with --alt-env if given)")
    ap.add_argument("--proxy-protocol", choices=["v2"],
                    help="the proxies send a PROXY v2 header to the HTTP backend (close and ka only)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = ap.parse_args()
    args.tests = [t for t in args.tests.split(",") if t]
    if args.proxy_protocol and (set(args.tests) - {"close", "ka"} or args.idle):
        sys.exit("--proxy-protocol measures close and ka only: add --tests close,ka --idle 0")
    if args.alt_env or args.alt_bin:
        TARGETS["lb-alt"] = "127.0.54.1"
        PROXIES.insert(1, "lb-alt")
        HOLD_PORTS["lb-alt"] = 9004
    for tool in ("haproxy", "nginx", "iperf3", "wrk", "ss", "prlimit", "taskset"):
        if not shutil.which(tool):
            sys.exit("missing %s: apt-get install haproxy nginx-light libnginx-mod-stream iperf3 wrk" % tool)
    if not os.path.exists(args.lb_bin):
        sys.exit("no lb-proxy at %s: cargo build --release -p lb-proxy" % args.lb_bin)
    if not os.path.exists(args.naive_bin):
        sys.exit("no naive proxy at %s: cargo build --release -p lb-examples --example naive_proxy"
                 % args.naive_bin)
    h = Harness(args)
    try:
        h.start()
        print("work dir %s; %d rounds" % (h.dir, args.rounds), flush=True)
        results = h.rounds()
        mem = h.memory(args.idle) if args.idle else {}
        text = report(results, mem, args)
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"results": results, "memory": mem, "args": vars(args)}, f, indent=1)
    finally:
        h.stop()


if __name__ == "__main__":
    main()
