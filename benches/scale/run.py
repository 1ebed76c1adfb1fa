#!/usr/bin/env python3
"""What lb-proxy costs as the number of services grows (issue 20), next to
HAProxy and nginx (stream) holding the same services, in one run.

For each N of --sizes (default 1000,5000,10000,15000) it generates N services
`s0`..`s{N-1}`, each a ClusterIP service with an explicit cluster IP in
127.64.0.0/10 (`[cluster] service_cidr`), one TCP port (8000) and 10
hand-listed endpoints on 127.128.0.0/10 port 8080 (they exist on paper only:
nothing dials them), in two forms:

    file        one TOML file: [node]/[cluster]/[proxy]/[admin], [[services]]
                and [[endpoints]] (with subsets)
    manifests   the same settings file without objects, plus `--manifests DIR`
                holding one YAML file per service (a Service and its Endpoints)

`lb-proxy check` must accept both. Then, per N and form, on the release build:

    load        from process start until GET /api/v1/services lists N
                (the end of that request; `vip_s` in the JSON: until the
                last service's cluster IP accepted)
    RSS         VmRSS of the process 2 s after the load
    /metrics    one GET with the whole body read (median of 3), and its size
    get svc     `lb-proxy get services --admin ADDR`, the whole command
                (median of 3)
    change      one service added (file: the file rewritten with one more
                service, written beside it and renamed over it; manifests:
                one more file renamed into the directory), from the rename
                until its cluster IP:port accepts a TCP connection (polled
                every 5 ms)
    RSS after   20 more reloads, each adding or removing one service and
                waited for (its address accepts, or refuses), then VmRSS 2 s
                after the last; the JSON keeps each reload's time

and once, 100,000 endpoints in one service (both forms): load, RSS, /metrics.

Peers, for the same N and addresses (port 8001 for HAProxy, 8002 for nginx;
lb uses 8000): HAProxy with one `listen` section per service (`bind` on the
cluster IP, 10 `server` lines, nbthread = cores) and nginx's stream module
with one `server` per service (`listen` on the cluster IP, `proxy_pass` to an
`upstream` of 10 servers, worker_processes = cores): start (until the last
address accepts), RSS of all their processes 2 s later, and one reload
(`haproxy -sf OLD` / `nginx -s reload`) with one more service until its
address accepts. --peer-sizes chooses which N they run at (default: all).

Every listener is on 127.0.0.0/8; nothing is dialled but loopback addresses.
Every wait is bounded (--bound, default 120 s); every child runs in its own
session and is killed on exit (also on Ctrl-C or SIGTERM). Each child gets
the hard RLIMIT_NOFILE as its soft limit (one descriptor per listener); a
size that does not fit under it is skipped and said so. Not part of .ci/run:
this is a benchmark.

    cargo build --release -p lb-proxy
    benches/scale/run.py [--sizes 1000,5000,10000,15000] [--json out.json] \\
        [--png benches/scale/baseline.png] [--perf 10000]

--png draws the figures against N (log-log; lb solid, peers dashed) with
matplotlib: `apt-get install python3-matplotlib`, and run the script with
/usr/bin/python3 when `python3` is another interpreter (pyenv). --perf N
records one more load of N services (file form) under
`perf record -e cpu-clock -g` and prints the top 10 functions by self time,
and those of lb-proxy's own code; with --perf-call-graph dwarf also lb's
functions by time in and under them (the release build has no frame
pointers, so -g alone names no callers). It wants a binary with symbols
(`cargo build --profile profiling -p lb-proxy`, then --perf-bin
target/profiling/lb-proxy). The baseline in BENCHMARKS.md ("Scale (issue
20)") was taken with:

    /usr/bin/python3 benches/scale/run.py --json benches/scale/baseline.json \
        --png benches/scale/baseline.png
"""
import argparse, atexit, http.client, ipaddress, json, os, re, resource, shutil, signal, socket
import statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "compare"))
import run as compare_run  # noqa: E402  (the process-tree RSS the comparison uses)
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SERVICE_CIDR = "127.64.0.0/10"
SVC_BASE = int(ipaddress.IPv4Address("127.64.0.0"))
EP_BASE = int(ipaddress.IPv4Address("127.128.0.0"))
EP_PORT = 8080
PORTS = {"lb": 8000, "haproxy": 8001, "nginx": 8002}
ENDPOINTS = 10
ADMIN_HOST = "127.0.0.1"
RELOADS = 20
CORES = os.cpu_count() or 1
SOFT, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
# What a proxy needs besides one descriptor per listener (admin, logs,
# epoll, the change checks' connections, HAProxy's maxconn headroom).
SPARE = 2500

CHILDREN = []  # every Popen we started, killed at exit


def vip(i):
    """Cluster IP of service i (skips the range's network address)."""
    return str(ipaddress.IPv4Address(SVC_BASE + 1 + i))


def ep(i, j, per=ENDPOINTS):
    """Endpoint j of service i: distinct addresses, on paper only."""
    return str(ipaddress.IPv4Address(EP_BASE + 1 + i * per + j))


# --- children ------------------------------------------------------------------


def raise_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD))


def spawn(cmd, log, env=None):
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, preexec_fn=raise_nofile, start_new_session=True)
    CHILDREN.append(p)
    return p


def kill(p, grace=10.0):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group too: nginx workers, a straggling HAProxy
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def kill_all():
    for p in CHILDREN:
        kill(p, grace=2.0)
    CHILDREN.clear()


def on_signal(signum, _frame):
    kill_all()
    sys.exit(128 + signum)


def rss_mb(pid):
    """Resident memory of `pid` and its descendants (nginx workers), in MB."""
    return compare_run.rss_kib(pid) / 1024


# --- probes --------------------------------------------------------------------


def accepts(addr, port):
    """Whether addr:port completes a TCP handshake. A proxy whose endpoints
    refuse (these exist on paper only) resets the client within microseconds
    on loopback, often before connect() returns: ECONNRESET means the
    handshake was done, so it counts as accepted. ECONNREFUSED (a SYN
    answered by RST: nothing listens) and a timeout do not."""
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect((addr, port))
        return True
    except ConnectionResetError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(pred, bound, every):
    """Seconds until pred() holds, polled every `every` s; None past bound."""
    start = time.monotonic()
    end = start + bound
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() > end:
            return None
        time.sleep(every)


def get(port, path, bound):
    """(seconds, body) of one GET, the whole body read."""
    start = time.monotonic()
    c = http.client.HTTPConnection(ADMIN_HOST, port, timeout=bound)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("GET %s: %d %s" % (path, r.status, body[:200]))
    finally:
        c.close()
    return time.monotonic() - start, body


def free_port():
    s = socket.socket()
    s.bind((ADMIN_HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- generated configurations ----------------------------------------------------


def lb_header(admin_port):
    # Outlier ejection off: the endpoints exist on paper only, so the change
    # checks' connections fail every dial, and with ejection on the service
    # would lose all its endpoints and close its listener (lb refuses
    # connections to a port without ready endpoints), which a removal check
    # would take for the removal.
    return ('[node]\nname = "scale"\naddresses = ["127.0.0.1"]\n\n'
            '[cluster]\nservice_cidr = "%s"\n\n'
            '[proxy]\noutlier_consecutive_failures = 0\n\n'
            '[admin]\nlisten = "%s:%d"\n' % (SERVICE_CIDR, ADMIN_HOST, admin_port))


def lb_service_toml(i):
    return ('\n[[services]]\nname = "s%d"\ncluster_ip = "%s"\n'
            'ports = [{ name = "p", port = %d, target_port = %d }]\n'
            % (i, vip(i), PORTS["lb"], EP_PORT))


def lb_endpoints_toml(i, count=ENDPOINTS):
    addrs = ",\n".join('  { ip = "%s" }' % ep(i, j, count) for j in range(count))
    return ('\n[[endpoints]]\nname = "s%d"\n[[endpoints.subsets]]\naddresses = [\n%s,\n]\n'
            'ports = [{ name = "p", port = %d }]\n' % (i, addrs, EP_PORT))


def lb_file(admin_port, services, count=ENDPOINTS):
    """The single TOML file: settings, every service, then every Endpoints."""
    return "".join([lb_header(admin_port)] + [lb_service_toml(i) for i in services]
                   + [lb_endpoints_toml(i, count) for i in services])


def lb_manifest(i, count=ENDPOINTS):
    """One service's YAML file: its Service and its Endpoints."""
    addrs = "".join("  - ip: %s\n" % ep(i, j, count) for j in range(count))
    return ("apiVersion: v1\nkind: Service\nmetadata:\n  name: s%d\n  namespace: default\n"
            "spec:\n  type: ClusterIP\n  clusterIP: %s\n  ports:\n  - name: p\n    protocol: TCP\n"
            "    port: %d\n    targetPort: %d\n---\n"
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: s%d\n  namespace: default\n"
            "subsets:\n- addresses:\n%s  ports:\n  - name: p\n    port: %d\n    protocol: TCP\n"
            % (i, vip(i), PORTS["lb"], EP_PORT, i, addrs, EP_PORT))


def write_atomic(path, text, tmp_dir):
    """Write beside (in tmp_dir, same file system), then rename: the rename is
    the moment the change is written; returns the monotonic time after it."""
    tmp = os.path.join(tmp_dir, ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)
    return time.monotonic()


def haproxy_cfg(services):
    out = ["global\n    nbthread %d\n    maxconn 1000\n\n"
           "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1m\n"
           "    timeout server 1m\n" % CORES]
    for i in services:
        out.append("\nlisten s%d\n    bind %s:%d\n" % (i, vip(i), PORTS["haproxy"]))
        out.extend("    server e%d %s:%d\n" % (j, ep(i, j), EP_PORT) for j in range(ENDPOINTS))
    return "".join(out)


def nginx_conf(d, services):
    out = ["load_module /usr/lib/nginx/modules/ngx_stream_module.so;\ndaemon off;\nuser root;\n"
           "worker_processes %d;\nworker_rlimit_nofile %d;\npid %s/nginx.pid;\n"
           "error_log %s/nginx.err error;\n"
           # Every listening socket takes a connection slot in each worker.
           "events {\n    worker_connections %d;\n}\n\nstream {\n"
           % (CORES, HARD, d, d, len(services) + 2000)]
    for i in services:
        out.append("    upstream u%d {\n" % i)
        out.extend("        server %s:%d;\n" % (ep(i, j), EP_PORT) for j in range(ENDPOINTS))
        out.append("    }\n    server { listen %s:%d; proxy_pass u%d; }\n" % (vip(i), PORTS["nginx"], i))
    out.append("}\n")
    return "".join(out)


# --- lb ------------------------------------------------------------------------


class Lb:
    """One lb-proxy process over one generated configuration."""

    def __init__(self, args, work, form, services, count=ENDPOINTS, binary=None, wrap=None):
        self.args, self.form, self.count = args, form, count
        self.binary = binary or args.lb_bin
        self.wrap = wrap or []
        self.dir = tempfile.mkdtemp(prefix="lb-%s-%d-%d-" % (form, len(services), count), dir=work)
        self.admin_port = free_port()
        self.admin = "%s:%d" % (ADMIN_HOST, self.admin_port)
        self.services = list(services)
        self.conf = os.path.join(self.dir, "lb.toml")
        self.manifests = os.path.join(self.dir, "manifests")
        if form == "file":
            with open(self.conf, "w") as f:
                f.write(lb_file(self.admin_port, self.services, count))
        else:
            with open(self.conf, "w") as f:
                f.write(lb_header(self.admin_port))
            os.makedirs(self.manifests)
            for i in self.services:
                with open(os.path.join(self.manifests, "s%d.yaml" % i), "w") as f:
                    f.write(lb_manifest(i, count))
        self.proc = None

    def cmd(self, verb):
        c = [self.binary, verb, "--config", self.conf]
        return c + (["--manifests", self.manifests] if self.form == "manifests" else [])

    def check(self):
        start = time.monotonic()
        r = subprocess.run(self.cmd("check"), capture_output=True, text=True,
                           timeout=self.args.bound, preexec_fn=raise_nofile)
        if r.returncode != 0:
            raise RuntimeError("lb-proxy check refused %s: %s" % (self.dir, (r.stdout + r.stderr)[-2000:]))
        return time.monotonic() - start

    def listed(self):
        try:
            _, body = get(self.admin_port, "/api/v1/services", self.args.bound)
        except (OSError, RuntimeError, http.client.HTTPException):
            return -1
        return len(json.loads(body)["items"])

    def start(self):
        """Seconds from the spawn until the last cluster IP accepts and until
        /api/v1/services lists every service."""
        env = dict(os.environ, LB_RUNTIME_DIR=os.path.join(self.dir, "run"))
        if self.args.rust_log:
            env["RUST_LOG"] = self.args.rust_log
        self.log = open(os.path.join(self.dir, "lb.log"), "w")
        t0 = time.monotonic()
        self.proc = spawn(self.wrap + self.cmd("run"), self.log, env)
        last = self.services[-1]
        bound = self.args.bound
        alive = lambda: self.proc.poll() is None
        if wait_until(lambda: not alive() or accepts(vip(last), PORTS["lb"]), bound, 0.005) is None \
                or not alive():
            raise RuntimeError("lb-proxy did not listen on %s in %d s; see %s"
                               % (vip(last), bound, self.log.name))
        vip_s = time.monotonic() - t0
        n = len(self.services)
        if wait_until(lambda: not alive() or self.listed() == n, bound, 0.02) is None or not alive():
            raise RuntimeError("/api/v1/services did not list %d in %d s; see %s" % (n, bound, self.log.name))
        return vip_s, time.monotonic() - t0

    def rss(self):
        return rss_mb(self.proc.pid)

    def metrics(self, times=3):
        runs = [get(self.admin_port, "/metrics", self.args.bound) for _ in range(times)]
        return [t for t, _ in runs], len(runs[-1][1])

    def get_services(self, times=3):
        out = []
        for _ in range(times):
            start = time.monotonic()
            r = subprocess.run([self.binary, "get", "services", "--admin", self.admin],
                               capture_output=True, text=True, timeout=self.args.bound)
            out.append(time.monotonic() - start)
            if r.returncode != 0:
                raise RuntimeError("get services: %s" % r.stderr[-500:])
            lines = len(r.stdout.splitlines())
            if lines != len(self.services) + 1:
                raise RuntimeError("get services printed %d lines for %d services" % (lines, len(self.services)))
        return out

    def change(self, add, i):
        """Add or remove service i; seconds from the rename (or unlink) until
        its cluster IP accepts (or refuses)."""
        if add:
            self.services.append(i)
        else:
            self.services.remove(i)
        if self.form == "file":
            text = lb_file(self.admin_port, self.services, self.count)
            t = write_atomic(self.conf, text, self.dir)
        else:
            path = os.path.join(self.manifests, "s%d.yaml" % i)
            if add:
                t = write_atomic(path, lb_manifest(i, self.count), self.dir)
            else:
                os.unlink(path)
                t = time.monotonic()
        want = add
        took = wait_until(lambda: accepts(vip(i), PORTS["lb"]) == want, self.args.bound, 0.005)
        if took is None:
            raise RuntimeError("service s%d not %s in %d s; see %s"
                               % (i, "added" if add else "removed", self.args.bound, self.log.name))
        return time.monotonic() - t

    def stop(self):
        if self.proc:
            kill(self.proc)
            CHILDREN.remove(self.proc)
            self.log.close()


def measure_lb(args, work, n, form):
    r = {"n": n, "form": form}
    lb = Lb(args, work, form, range(n))
    try:
        r["check_s"] = lb.check()
        r["vip_s"], r["load_s"] = lb.start()
        time.sleep(2)
        r["rss_mb"] = lb.rss()
        r["metrics_runs_s"], r["metrics_bytes"] = lb.metrics()
        r["metrics_s"] = statistics.median(r["metrics_runs_s"])
        r["get_runs_s"] = lb.get_services()
        r["get_s"] = statistics.median(r["get_runs_s"])
        r["change_s"] = lb.change(True, n)
        r["rss_after_one_mb"] = lb.rss()
        # 20 reloads: remove the one just added, add a new one, and so on,
        # each a fresh name and address.
        extra, nxt, runs = [n], n + 1, []
        for k in range(RELOADS):
            if k % 2 == 0:
                runs.append(lb.change(False, extra.pop()))
            else:
                runs.append(lb.change(True, nxt))
                extra.append(nxt)
                nxt += 1
            if lb.rss() > args.rss_cap:
                r["note"] = "stopped after %d reloads: RSS over %d MB" % (k + 1, args.rss_cap)
                break
        r["reload_runs_s"] = runs
        r["reload_median_s"] = statistics.median(runs)
        time.sleep(2)
        r["rss_after_reloads_mb"] = lb.rss()
    except Exception as e:  # reported in the table, the run goes on
        r["error"] = str(e)
    finally:
        lb.stop()
    return r


def measure_wide(args, work, form, count):
    """One service with `count` endpoints: load, RSS, /metrics."""
    r = {"endpoints": count, "form": form}
    lb = Lb(args, work, form, [0], count=count)
    try:
        r["vip_s"], r["load_s"] = lb.start()
        time.sleep(2)
        r["rss_mb"] = lb.rss()
        r["metrics_runs_s"], r["metrics_bytes"] = lb.metrics()
        r["metrics_s"] = statistics.median(r["metrics_runs_s"])
    except Exception as e:
        r["error"] = str(e)
    finally:
        lb.stop()
    return r


def perf_rows(data, extra, top):
    r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--fields", "overhead,dso,sym",
                        "-g", "none", "--percent-limit", "0.1"] + extra,
                       capture_output=True, text=True, timeout=900)
    return [l.rstrip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")][:top]


def profile(args, work, n):
    """One load of n services (file form) under perf: the top functions by
    self time (all, and lb-proxy's own code), and with a usable call graph
    (--perf-call-graph dwarf) lb-proxy's functions by time spent under them."""
    data = os.path.join(work, "perf.data")
    cg = ["-g"] if args.perf_call_graph == "fp" else ["--call-graph", "dwarf,16384"]
    wrap = ["perf", "record", "-e", "cpu-clock", "-F", "999"] + cg + ["-o", data, "--"]
    binary = args.perf_bin or args.lb_bin
    lb = Lb(args, work, "file", range(n), binary=binary, wrap=wrap)
    try:
        vip_s, load_s = lb.start()
        # perf is the process we started: SIGINT to the group ends lb-proxy
        # (it drains and exits), and perf then writes its data.
        os.killpg(lb.proc.pid, signal.SIGINT)
        lb.proc.wait(timeout=args.bound)
    finally:
        lb.stop()
    own = ["--dsos", os.path.basename(binary)]
    out = {"n": n, "load_s": load_s, "vip_s": vip_s, "call_graph": args.perf_call_graph,
           "top": perf_rows(data, ["--no-children"], args.perf_top),
           "top_own": perf_rows(data, ["--no-children"] + own, args.perf_top)}
    if args.perf_call_graph == "dwarf":
        # Time in and under each of lb's own functions (the workspace crates),
        # not inlined frames; the runtime's and std's frames left out.
        r = subprocess.run(["perf", "report", "-i", data, "--children", "--stdio", "--sort", "sym",
                            "--percent-limit", "0.5"], capture_output=True, text=True, timeout=900)
        rows = [l.rstrip() for l in r.stdout.splitlines()
                if re.match(r"^ +[0-9.]+% +[0-9.]+% ", l) and re.search(r"\] <?lb_(config|core|proxy)::", l)
                and "(inlined)" not in l]
        out["top_inclusive"] = rows[:args.perf_top * 2]
    return out


# --- peers ---------------------------------------------------------------------


def measure_haproxy(args, work, n):
    r = {"n": n}
    d = os.path.join(work, "haproxy-%d" % n)
    os.makedirs(d)
    services = list(range(n))
    cfg = os.path.join(d, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(haproxy_cfg(services))
    log = open(os.path.join(d, "haproxy.log"), "w")
    procs = []
    try:
        t0 = time.monotonic()
        p = spawn(["haproxy", "-db", "-f", cfg], log)
        procs.append(p)
        alive = lambda: p.poll() is None
        if wait_until(lambda: not alive() or accepts(vip(n - 1), PORTS["haproxy"]), args.bound, 0.005) is None \
                or not alive():
            raise RuntimeError("haproxy did not start; see %s" % log.name)
        r["start_s"] = time.monotonic() - t0
        time.sleep(2)
        r["rss_mb"] = rss_mb(p.pid)
        services.append(n)
        cfg2 = os.path.join(d, "haproxy2.cfg")
        with open(cfg2, "w") as f:
            f.write(haproxy_cfg(services))
        t0 = time.monotonic()
        p2 = spawn(["haproxy", "-db", "-f", cfg2, "-sf", str(p.pid)], log)
        procs.append(p2)
        if wait_until(lambda: p2.poll() is not None or accepts(vip(n), PORTS["haproxy"]), args.bound, 0.005) \
                is None or p2.poll() is not None:
            raise RuntimeError("haproxy reload did not serve s%d; see %s" % (n, log.name))
        r["reload_s"] = time.monotonic() - t0
        p.wait(timeout=args.bound)  # the old one leaves once its listeners are handed over
        time.sleep(2)
        r["rss_after_reload_mb"] = rss_mb(p2.pid)
    except Exception as e:
        r["error"] = str(e)
    finally:
        for q in procs:
            kill(q)
            CHILDREN.remove(q)
        log.close()
    return r


def measure_nginx(args, work, n):
    r = {"n": n}
    d = os.path.join(work, "nginx-%d" % n)
    os.makedirs(os.path.join(d, "logs"))
    services = list(range(n))
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(d, services))
    log = open(os.path.join(d, "nginx.log"), "w")
    base = ["nginx", "-p", d, "-e", os.path.join(d, "nginx.err"), "-c", conf]
    p = None
    try:
        t0 = time.monotonic()
        p = spawn(base, log)
        alive = lambda: p.poll() is None
        if wait_until(lambda: not alive() or accepts(vip(n - 1), PORTS["nginx"]), args.bound, 0.005) is None \
                or not alive():
            raise RuntimeError("nginx did not start; see %s" % d)
        r["start_s"] = time.monotonic() - t0
        time.sleep(2)
        r["rss_mb"] = rss_mb(p.pid)
        services.append(n)
        text = nginx_conf(d, services)
        tmp = os.path.join(d, ".nginx.conf.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, conf)
        t0 = time.monotonic()
        s = subprocess.run(base + ["-s", "reload"], capture_output=True, text=True, timeout=args.bound)
        if s.returncode != 0:
            raise RuntimeError("nginx -s reload: %s" % s.stderr[-500:])
        if wait_until(lambda: not alive() or accepts(vip(n), PORTS["nginx"]), args.bound, 0.005) is None \
                or not alive():
            raise RuntimeError("nginx reload did not serve s%d; see %s" % (n, d))
        r["reload_s"] = time.monotonic() - t0
        time.sleep(2)
        r["rss_after_reload_mb"] = rss_mb(p.pid)
    except Exception as e:
        r["error"] = str(e)
    finally:
        if p:
            kill(p)
            CHILDREN.remove(p)
        log.close()
    return r


# --- report --------------------------------------------------------------------

TARGETS_10K = {"load_s": "≤ 1", "rss_mb": "≤ 100", "metrics_s": "≤ 0.3", "get_s": "≤ 0.2",
               "change_s": "file ≤ 1, manifests ≤ 0.05", "reload_median_s": "",
               "rss_after_reloads_mb": "≤ 1.2× RSS"}


def fmt_s(x):
    if x is None:
        return "–"
    return "%.3f" % x if x < 10 else "%.1f" % x


def fmt_mb(x):
    return "–" if x is None else "%.0f" % x


def report(res):
    lines = []
    p = lines.append
    p("| N | form | load s | RSS MB | /metrics s (MB) | get services s | one change s | "
      "change, median of 20 s | RSS after 20 reloads MB (×) |")
    p("|---|---|---|---|---|---|---|---|---|")
    p("| *target at 10,000* | | *≤ 1* | *≤ 100* | *≤ 0.3* | *≤ 0.2* | *file ≤ 1, manifests ≤ 0.05* "
      "| | *≤ 1.2×* |")
    for r in res["lb"]:
        n = "{:,}".format(r["n"])
        if "error" in r and "rss_after_reloads_mb" not in r:
            got = [fmt_s(r.get("load_s")), fmt_mb(r.get("rss_mb"))]
            p("| %s | %s | %s | failed: %s |" % (n, r["form"], " | ".join(got), r["error"][:200]))
            continue
        ratio = r["rss_after_reloads_mb"] / r["rss_mb"] if r.get("rss_mb") else float("nan")
        p("| %s | %s | %s | %s | %s (%.1f) | %s | %s | %s | %s (%.2f×)%s |" % (
            n, r["form"], fmt_s(r["load_s"]), fmt_mb(r["rss_mb"]), fmt_s(r["metrics_s"]),
            r["metrics_bytes"] / 1e6, fmt_s(r["get_s"]), fmt_s(r["change_s"]),
            fmt_s(r["reload_median_s"]), fmt_mb(r["rss_after_reloads_mb"]), ratio,
            " " + r["note"] if r.get("note") else ""))
    for n in res.get("skipped", []):
        p("| {:,} | | skipped: {:,} listeners do not fit under the open-file limit ({:,}) | | | | | | |"
          .format(n, n, HARD))
    if res["peers"]:
        p("")
        p("| N | HAProxy start s | HAProxy RSS MB | HAProxy reload s | nginx start s | nginx RSS MB "
          "| nginx reload s |")
        p("|---|---|---|---|---|---|---|")
        for n, pr in sorted(res["peers"].items(), key=lambda kv: int(kv[0])):
            cells = []
            for name in ("haproxy", "nginx"):
                x = pr[name]
                if "error" in x and "reload_s" not in x:
                    cells += ["failed: %s" % x["error"][:120], fmt_mb(x.get("rss_mb")), "–"]
                else:
                    cells += [fmt_s(x["start_s"]), fmt_mb(x["rss_mb"]), fmt_s(x["reload_s"])]
            p("| {:,} | {} |".format(int(n), " | ".join(cells)))
    if res["wide"]:
        p("")
        p("| one service, endpoints | form | load s | RSS MB | /metrics s (MB) |")
        p("|---|---|---|---|---|")
        for r in res["wide"]:
            if "error" in r:
                p("| {:,} | {} | failed: {} | | |".format(r["endpoints"], r["form"], r["error"][:200]))
                continue
            p("| {:,} | {} | {} | {} | {} ({:.1f}) |".format(
                r["endpoints"], r["form"], fmt_s(r["load_s"]), fmt_mb(r["rss_mb"]), fmt_s(r["metrics_s"]),
                r["metrics_bytes"] / 1e6))
    if res.get("profile"):
        pr = res["profile"]
        p("")
        p("perf, one load of {:,} services (file form, {:.2f} s under perf), top functions by self time:"
          .format(pr["n"], pr["load_s"]))
        p("```")
        lines.extend(pr["top"])
        p("```")
        p("lb-proxy's own code, by self time:")
        p("```")
        lines.extend(pr["top_own"])
        p("```")
        if pr.get("top_inclusive"):
            p("lb's own functions by time in and under them (children, self; DWARF call graph):")
            p("```")
            lines.extend(pr["top_inclusive"])
            p("```")
    return "\n".join(lines)


def draw(res, path):
    """Three log-log panels against N: times through the file, times through
    the manifests (each with the peers' start and reload), and memory."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    ax_m = axes[2]
    lb_figs = [("load_s", "load", "C0"), ("metrics_s", "/metrics", "C1"), ("get_s", "get services", "C2"),
               ("change_s", "one change", "C3")]
    targets = {"load_s": 1.0, "metrics_s": 0.3, "get_s": 0.2}
    change_target = {"file": 1.0, "manifests": 0.05}
    peer_figs = [("haproxy", "start_s", "start", "C4", "^"), ("haproxy", "reload_s", "reload", "C5", "^"),
                 ("nginx", "start_s", "start", "C6", "x"), ("nginx", "reload_s", "reload", "C7", "x")]
    peers = sorted(((int(n), pr) for n, pr in res["peers"].items()), key=lambda t: t[0])
    sizes = sorted({r["n"] for r in res["lb"]} | {n for n, _ in peers})
    markers = {"file": "o", "manifests": "s"}
    for ax, form in zip(axes[:2], ("file", "manifests")):
        rows = [r for r in res["lb"] if r["form"] == form]
        for key, label, color in lb_figs:
            pts = [(r["n"], r[key]) for r in rows if r.get(key)]
            if pts:
                ax.plot(*zip(*pts), color=color, marker="o", linestyle="-", label="lb " + label)
            y = change_target[form] if key == "change_s" else targets[key]
            x = 10600 if key == "change_s" else 10000  # beside load's star when both are 1 s
            ax.plot([x], [y], marker="*", markersize=15, color=color, linestyle="none")
        for name, key, label, color, marker in peer_figs:
            pts = [(n, pr[name][key]) for n, pr in peers if pr[name].get(key)]
            if pts:
                ax.plot(*zip(*pts), color=color, marker=marker, linestyle="--", label="%s %s" % (name, label))
        ax.plot([], [], marker="*", markersize=10, color="gray", linestyle="none", label="lb's target at 10,000")
        ax.set_title("time, lb through %s" % ("the single TOML file" if form == "file"
                                               else "a manifests directory"))
        ax.set_ylabel("seconds")
    for form in ("file", "manifests"):
        rows = [r for r in res["lb"] if r["form"] == form]
        for key, label, color in (("rss_mb", "after load", "C0"), ("rss_after_reloads_mb", "after 20 reloads", "C3")):
            pts = [(r["n"], r[key]) for r in rows if r.get(key)]
            if pts:
                ax_m.plot(*zip(*pts), color=color, marker=markers[form], linestyle="-",
                          label="lb %s, %s" % (label, form))
    for name, color, marker in (("haproxy", "C4", "^"), ("nginx", "C6", "x")):
        pts = [(n, pr[name]["rss_mb"]) for n, pr in peers if pr[name].get("rss_mb")]
        if pts:
            ax_m.plot(*zip(*pts), color=color, marker=marker, linestyle="--", label="%s after start" % name)
    ax_m.plot([10000], [100], marker="*", markersize=15, color="C0", linestyle="none",
              label="lb's target at 10,000")
    ax_m.set_title("memory (VmRSS, all processes)")
    ax_m.set_ylabel("MB")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        if sizes:
            ax.set_xticks(sizes)
            ax.set_xticklabels(["{:,}".format(n) for n in sizes])
            ax.minorticks_off()
        ax.set_xlabel("services (10 endpoints each)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("cost against the number of services: lb-proxy solid, HAProxy and nginx dashed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,10000,15000", help="numbers of services")
    ap.add_argument("--forms", default="file,manifests")
    ap.add_argument("--peer-sizes", help="sizes the peers run at (default: --sizes; '' for none)")
    ap.add_argument("--wide", type=int, default=100000,
                    help="endpoints of the one-service case (0: skip)")
    ap.add_argument("--bound", type=float, default=120.0, help="seconds any one wait may take")
    ap.add_argument("--rss-cap", type=int, default=8000,
                    help="MB: stop the 20 reloads when lb's RSS passes this")
    ap.add_argument("--lb-bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "lb-proxy"))
    ap.add_argument("--rust-log", help="RUST_LOG for lb-proxy (default: its own, info)")
    ap.add_argument("--perf", type=int, help="also profile one load of this many services")
    ap.add_argument("--perf-bin", help="binary for --perf (one with symbols: the profiling profile)")
    ap.add_argument("--perf-top", type=int, default=10)
    ap.add_argument("--perf-call-graph", choices=["fp", "dwarf"], default="fp",
                    help="perf's call graphs: frame pointers (-g) or DWARF (callers of malloc named)")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--png", help="draw the figures against N here (matplotlib)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    forms = [f for f in args.forms.split(",") if f]
    peer_sizes = sizes if args.peer_sizes is None else [int(s) for s in args.peer_sizes.split(",") if s]
    if not os.path.exists(args.lb_bin):
        sys.exit("no lb-proxy at %s: cargo build --release -p lb-proxy (or --lb-bin)" % args.lb_bin)
    for tool in (["haproxy", "nginx"] if peer_sizes else []) + (["perf"] if args.perf else []):
        if not shutil.which(tool):
            sys.exit("missing %s: apt-get install haproxy nginx-light libnginx-mod-stream linux-perf" % tool)
    if args.png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit("--png needs matplotlib: apt-get install python3-matplotlib, and run this with "
                     "/usr/bin/python3 if python3 is another interpreter")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(kill_all)
    raise_nofile()

    work = tempfile.mkdtemp(prefix="lb-scale-")
    res = {"machine": {"cores": CORES, "nofile_hard": HARD, "kernel": os.uname().release,
                       "lb_bin": args.lb_bin},
           "lb": [], "peers": {}, "wide": [], "skipped": []}
    print("work dir %s; open-file limit %d (soft raised to it for every child)" % (work, HARD), flush=True)
    try:
        for n in sizes:
            if n + RELOADS + SPARE > HARD:
                print("skipping %d services: %d listeners and %d spare do not fit under the open-file "
                      "limit %d" % (n, n, SPARE, HARD), flush=True)
                res["skipped"].append(n)
                continue
            for form in forms:
                r = measure_lb(args, work, n, form)
                res["lb"].append(r)
                print("  lb %-9s %6d: %s" % (form, n, json.dumps(
                    {k: v for k, v in r.items() if not k.endswith("runs_s")})), flush=True)
            if n in peer_sizes:
                pr = {"haproxy": measure_haproxy(args, work, n), "nginx": measure_nginx(args, work, n)}
                res["peers"][str(n)] = pr
                print("  peers %6d: %s" % (n, json.dumps(pr)), flush=True)
        if args.wide:
            for form in forms:
                r = measure_wide(args, work, form, args.wide)
                res["wide"].append(r)
                print("  lb one service, %d endpoints, %s: %s" % (args.wide, form, json.dumps(
                    {k: v for k, v in r.items() if not k.endswith("runs_s")})), flush=True)
        if args.perf:
            try:
                res["profile"] = profile(args, work, args.perf)
            except Exception as e:  # the figures above still get reported
                print("perf failed: %s" % e, flush=True)
        print()
        print(report(res))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        if args.png:
            draw(res, args.png)
            print("\npicture: %s" % args.png)
    finally:
        kill_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
