#!/usr/bin/env python3
"""Hot upgrade under load: lb-proxy, HAProxy and nginx (stream) in one run.

Each proxy serves on its own loopback address in front of the same backend
(run.py's nginx on 127.0.50.1:8080 serving a 1 KiB file):

    lb       127.0.65.1  lb-proxy (release build), admin API on 127.0.65.1:10249
    haproxy  127.0.66.1  HAProxy, mode tcp, nbthread = cores
    nginx    127.0.67.1  nginx stream, worker_processes = cores

For each of two loads, both `wrk -c 32 -t 2 -d D --latency`:

    close    with `Connection: close` (a new connection for every request:
             a hand-over that loses the accept queue shows up here)
    ka       keep-alive (connections that live across the upgrade)

and for each proxy it runs the load twice: once with no upgrade, once while
the proxy is upgraded N times, evenly spread over D. Each proxy is upgraded
the way its documentation says to upgrade without refusing a connection:

    lb       a new `lb-proxy run --config F --takeover` (same node name, same
             --runtime-dir): the running process hands its listening sockets
             over its control socket, then drains and exits 0. The upgrade is
             done when the new process logs "took over" or the old one exits.
    haproxy  `haproxy -db -f F -x SOCK -sf OLDPID`: the new process takes the
             listeners over the stats socket (`expose-fd listeners`), then
             tells the old one to finish. Done when `show info` on SOCK
             answers with the new process's pid.
    nginx    binary upgrade: USR2 to the master (a new master starts with the
             inherited listeners; the old pid file becomes .oldbin), wait for
             the new pid file and the new workers, WINCH then QUIT to the old
             master.

Old processes drain their open connections for at most --drain seconds (the
same bound for all three: lb's `[proxy] drain_timeout`, HAProxy's
`hard-stop-after`, nginx's `worker_shutdown_timeout`); a keep-alive client
whose connection is cut there sees a read error and reconnects.

It reports per proxy and load: requests/s, wrk's errors (Socket errors:
connect/read/write/timeout, and Non-2xx), p99 latency, the ratio
p99(upgrades)/p99(none), and the resident memory and number of all the
proxy's processes right after the last upgrade (old processes still
draining), and any process still alive --drain + 10 s after the run. Beside
wrk, a probe opens one new connection every 10 ms and times it, so that a
failed or slow connection is placed against the upgrades' phases ("upgrade 3
+40 ms, during its hand-over"). With --json, the raw figures (wrk's output,
each upgrade's timing, the probe's failures and slowest connections) go there.

    benches/compare/takeover.py [--upgrades 20] [--duration 20] [--drain 2] \\
        [--lb-bin PATH] [--proxies lb,haproxy,nginx] [--json out.json] [--keep]

Needs haproxy, nginx with libnginx-mod-stream (/usr/sbin/nginx), wrk and
root (nginx's `user root`). Every step is bounded in time, every address is
on loopback, and every process it started is killed when it ends (also on
Ctrl-C). Not part of .ci/run: this is a benchmark.
"""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the tree for this import
sys.path.insert(0, HERE)
import run  # noqa: E402  (backend template, rendering, RSS, ports, wrk's latency)

BACKEND = run.BACKEND
VIPS = {"lb": "127.0.65.1", "haproxy": "127.0.66.1", "nginx": "127.0.67.1"}
LB_ADMIN = ("127.0.65.1", 10249)
PROXIES = ["lb", "haproxy", "nginx"]
LOADS = ["close", "ka"]
NGINX = "/usr/sbin/nginx"  # by its full path: USR2 re-executes argv[0]
STEP_BOUND = 15.0  # seconds one upgrade may take before it counts as failed


def session_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_in(sessions):
    """Live pids whose session is one of `sessions` (every process a proxy
    started, whatever re-parented it)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            if session_of(pid) in sessions and alive(pid):
                out.append(pid)
    return sorted(out)


def end_sessions(popens, more=()):
    """Ends every process of the sessions `popens` lead, and of the sessions
    `more` (a daemon's): SIGTERM to all of them (also those that outlived
    their session's leader), at most 10 s to go, then SIGKILL; reaps
    `popens`."""
    sessions = set(p.pid for p in popens) | set(more)

    def signal_all(pids, sig):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    for p in popens:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
    signal_all(processes_in(sessions), signal.SIGTERM)
    wait_for(lambda: not processes_in(sessions), 10.0, 0.1)
    signal_all(processes_in(sessions), signal.SIGKILL)
    for p in popens:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def wait_for(cond, bound, step=0.02):
    end = time.monotonic() + bound
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


def http_get(addr, path, bound=2.0):
    """(status, body) of a plain HTTP/1.0 GET, or (None, error)."""
    try:
        with socket.create_connection(addr, timeout=bound) as s:
            s.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, addr[0])).encode())
            data = run.recv_all(s)
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode(errors="replace")
    except (OSError, ValueError, IndexError) as e:
        return None, str(e)


def haproxy_pid(sock):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1.0)
            s.connect(sock)
            s.sendall(b"show info\n")
            data = run.recv_all(s)
        m = re.search(rb"^Pid: (\d+)", data, re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def parse_wrk(out):
    res = {"rps": float("nan"), "requests": 0, "p99_ms": float("nan"),
           "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"99%\s+([\d.]+\w+)", out)
    if m:
        res["p99_ms"] = run.parse_latency(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res.update(connect=int(m.group(1)), read=int(m.group(2)), write=int(m.group(3)),
                   timeout=int(m.group(4)))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


class Probe(threading.Thread):
    """One `Connection: close` request every `every` seconds to a VIP, each
    timed and stamped, so that a failure or a stall can be placed against
    the upgrades' phases (wrk only counts errors)."""

    def __init__(self, ip, t0, every=0.01):
        super().__init__(daemon=True)
        self.ip, self.t0, self.every = ip, t0, every
        self.samples = []  # (start s since t0, latency ms, error or "")
        self.halt = threading.Event()

    def run(self):
        nxt = time.monotonic()
        while not self.halt.is_set():
            start = time.monotonic()
            err = ""
            try:
                with socket.create_connection((self.ip, 80), timeout=5.0) as s:
                    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    got = run.recv_all(s)
                if not got.startswith(b"HTTP/1.1 200") or len(got) < 1024:
                    err = "short answer (%d bytes)" % len(got)
            except OSError as e:
                err = "%s: %s" % (type(e).__name__, e)
            self.samples.append((start - self.t0, (time.monotonic() - start) * 1000, err))
            nxt += self.every
            self.halt.wait(max(0.0, nxt - time.monotonic()))

    def stop(self):
        self.halt.set()
        self.join(timeout=10)


def place(t, steps, event="upgrade", span="its hand-over of"):
    """Where `t` falls against the steps (upgrades here, reloads in
    reload.py): "upgrade K +X ms" after the start of the last one begun
    before t, or "before any upgrade"."""
    last = None
    for k, st in enumerate(steps):
        if st["start"] <= t:
            last = (k, st)
    if last is None:
        return "before any %s" % event
    k, st = last
    phase = "during" if t <= st["at"] else "after"
    return "%s %d +%.0f ms (%s %s %.0f ms)" % (
        event, k + 1, (t - st["start"]) * 1000, phase, span, (st["at"] - st["start"]) * 1000)


def probe_summary(samples, steps, event="upgrade", span="its hand-over of"):
    lat = sorted(x[1] for x in samples if not x[2])
    fails = [x for x in samples if x[2]]
    worst = sorted((x for x in samples if not x[2]), key=lambda x: -x[1])[:5]
    return {
        "count": len(samples), "failures": len(fails),
        "p99_ms": lat[int(len(lat) * 0.99)] if lat else float("nan"),
        "max_ms": lat[-1] if lat else float("nan"),
        "failed": [{"t": t, "error": e, "where": place(t, steps, event, span)}
                   for t, _, e in fails[:20]],
        "slowest": [{"t": t, "ms": ms, "where": place(t, steps, event, span)}
                    for t, ms, _ in worst],
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="lb-takeover-")
        self.popens = []  # every Popen, each in its own session
        self.sessions = {}  # proxy -> set of session ids of its processes
        self.current = {}  # proxy -> pid of the process (master) serving now
        self.generation = {p: 0 for p in PROXIES}
        self.nginx_draining = None  # nginx's last old master
        self.ng_pid = os.path.join(self.dir, "nginx-stream.pid")  # as the template says
        self.sub = dict(DIR=self.dir, BACKEND=BACKEND, THREADS=os.cpu_count() or 1,
                        NOFILE=run.NOFILE, MAXCONN=(run.NOFILE - 1000) // 2, HOLD_PORT=9000)

    # --- processes ---

    def spawn(self, name, cmd, env=None):
        log = open(os.path.join(self.dir, name + ".log"), "w")
        p = subprocess.Popen(["prlimit", run.LIMIT] + cmd, stdout=log, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        log.close()
        self.popens.append(p)
        return p

    def track(self, proxy, p):
        self.sessions.setdefault(proxy, set()).add(p.pid)
        self.current[proxy] = p.pid

    def kill_all(self):
        """Every process started here, and everything in their sessions
        (nginx's daemon, its masters of later generations, workers)."""
        daemon = set(self.sessions.get("nginx", set()))
        master = self.nginx_master(None)  # interrupted before it was recorded
        if master is not None and session_of(master) == master:
            daemon.add(master)
        end_sessions(self.popens, daemon)

    def close(self):
        self.kill_all()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- set-up ---

    def configs(self):
        d, drain = self.dir, self.args.drain
        lb = open(run.render("lb.toml.in", os.path.join(d, "lb.toml"), VIP=VIPS["lb"],
                             **self.sub)).read()
        for old, new in [('service_cidr = "127.0.48.0/20"', 'service_cidr = "127.0.65.0/24"'),
                         ('[admin]\nlisten = ""', '[admin]\nlisten = "%s:%d"' % LB_ADMIN),
                         ("[proxy]\n", '[proxy]\ndrain_timeout = "%gs"\n' % drain)]:
            if old not in lb:
                sys.exit("lb.toml.in changed: %r not found" % old)
            lb = lb.replace(old, new, 1)
        self.lb_conf = os.path.join(d, "lb.toml")
        open(self.lb_conf, "w").write(lb)

        self.ha_sock = os.path.join(d, "haproxy.sock")
        ha = open(run.render("haproxy.cfg.in", os.path.join(d, "haproxy.cfg"),
                             VIP=VIPS["haproxy"], **self.sub)).read()
        ha = ha.replace("global\n", "global\n    stats socket %s mode 600 level admin expose-fd "
                        "listeners\n    hard-stop-after %gs\n" % (self.ha_sock, drain), 1)
        self.ha_conf = os.path.join(d, "haproxy.cfg")
        open(self.ha_conf, "w").write(ha)

        ng = open(run.render("nginx-stream.conf.in", os.path.join(d, "nginx-stream.conf"),
                             VIP=VIPS["nginx"], **self.sub)).read()
        if "daemon off;\n" not in ng:
            sys.exit("nginx-stream.conf.in changed: no `daemon off;`")
        # A master whose parent is the one that started it ignores USR2 ("the
        # changing binary signal is ignored": that parent could be the old
        # binary), so nginx runs as a daemon here, as in production.
        ng = ng.replace("daemon off;\n", "daemon on;\nworker_shutdown_timeout %gs;\n" % drain, 1)
        self.ng_conf = os.path.join(d, "nginx-stream.conf")
        open(self.ng_conf, "w").write(ng)

    def lb_env(self):
        return dict(os.environ, RUST_LOG="info", LB_RUNTIME_DIR=os.path.join(self.dir, "run-lb"))

    def lb_cmd(self, takeover):
        return ([self.args.lb_bin, "run", "--config", self.lb_conf, "--runtime-dir",
                 os.path.join(self.dir, "run-lb")] + (["--takeover"] if takeover else []))

    def start(self):
        d = self.dir
        for ip, port in [(BACKEND, 8080)] + [(VIPS[p], 80) for p in PROXIES] + [LB_ADMIN]:
            if run.wait_port(ip, port, 0.2):
                sys.exit("%s:%d is already in use: stop what listens there first" % (ip, port))
        run.nginx_backend(d, self.sub, self.spawn)
        if not run.wait_port(BACKEND, 8080):
            sys.exit("backend on %s:8080 did not come up; see %s/backend.log" % (BACKEND, d))
        self.configs()
        for name in self.args.proxies:
            if name == "lb":
                p = self.spawn("lb-0", self.lb_cmd(False), env=self.lb_env())
            elif name == "haproxy":
                p = self.spawn("haproxy-0", ["haproxy", "-db", "-f", self.ha_conf])
            else:
                p = self.spawn("nginx-0", [NGINX, "-p", d, "-c", self.ng_conf])
            if not run.wait_port(VIPS[name], 80, 30.0):
                sys.exit("%s did not come up; see %s/%s-0.log" % (name, d, name))
            if name == "nginx":
                # The daemon is in a session of its own: the master's.
                master = wait_for(lambda: self.nginx_master(None), 10.0)
                if master is None or session_of(master) != master:
                    sys.exit("nginx wrote no pid file; see %s/nginx-stream.err" % d)
                self.sessions["nginx"] = {master}
                self.current["nginx"] = master
            else:
                self.track(name, p)
        if "lb" in self.args.proxies:
            if wait_for(lambda: http_get(LB_ADMIN, "/readyz")[0] == 200, 30.0, 0.1) is None:
                sys.exit("lb's /readyz is not 200; see %s/lb-0.log" % d)
        if "haproxy" in self.args.proxies:
            if wait_for(lambda: haproxy_pid(self.ha_sock), 10.0) is None:
                sys.exit("haproxy's stats socket does not answer; see %s/haproxy-0.log" % d)
        time.sleep(0.5)
        for p in self.popens:
            # nginx's launcher exits 0 once the daemon has forked.
            if p.poll() is not None and (p.returncode != 0 or NGINX not in p.args):
                sys.exit("%s exited at start; see the logs in %s" % (p.args, d))

    # --- one upgrade each ---

    def upgrade(self, name):
        """Hands `name` over to a new process; returns a dict with ok, seconds
        and what was seen (never raises for a failed hand-over)."""
        self.generation[name] += 1
        gen = self.generation[name]
        t0 = time.monotonic()
        res = getattr(self, "upgrade_" + name)(gen)
        res["seconds"] = time.monotonic() - t0
        return res

    def upgrade_lb(self, gen):
        old = self.current["lb"]
        log = os.path.join(self.dir, "lb-%d.log" % gen)
        p = self.spawn("lb-%d" % gen, self.lb_cmd(True), env=self.lb_env())
        self.track("lb", p)

        def done():
            if p.poll() is not None:
                return "new process exited %d" % p.returncode
            if not alive(old):
                return "old exited"
            try:
                if "took over" in open(log).read():
                    return "took over"
            except OSError:
                pass
            return None

        how = wait_for(done, STEP_BOUND)
        ok = how in ("old exited", "took over")
        status, body = http_get(LB_ADMIN, "/api/v1/process")
        served_by = None
        if status == 200:
            try:
                served_by = json.loads(body).get("pid")
            except ValueError:
                pass
        return {"ok": ok, "how": how or "timed out", "old": old, "new": p.pid,
                "admin_pid": served_by}

    def upgrade_haproxy(self, gen):
        old = self.current["haproxy"]
        p = self.spawn("haproxy-%d" % gen, ["haproxy", "-db", "-f", self.ha_conf, "-x",
                                             self.ha_sock, "-sf", str(old)])
        self.track("haproxy", p)
        seen = wait_for(lambda: haproxy_pid(self.ha_sock) == p.pid or p.poll() is not None,
                        STEP_BOUND)
        ok = bool(seen) and p.poll() is None
        return {"ok": ok, "how": "stats socket answers" if ok else
                ("new process exited %s" % p.poll() if p.poll() is not None else "timed out"),
                "old": old, "new": p.pid}

    def upgrade_nginx(self, gen):
        old = self.current["nginx"]
        # A new master ignores USR2 while its parent, the previous old master,
        # still drains ("the changing binary signal is ignored"): the next
        # upgrade waits for it to exit.
        waited = time.monotonic()
        previous = self.nginx_draining
        if previous and wait_for(lambda: not alive(previous), STEP_BOUND) is None:
            return {"ok": False, "how": "previous old master still alive", "old": old,
                    "new": None}
        waited = time.monotonic() - waited
        os.kill(old, signal.SIGUSR2)
        new = wait_for(lambda: self.nginx_master(old), STEP_BOUND)
        if new is None:
            return {"ok": False, "how": "no new pid file", "old": old, "new": None}
        threads = self.sub["THREADS"]
        workers = wait_for(lambda: len(run.pids_of(new)) - 1 >= threads, STEP_BOUND)
        os.kill(old, signal.SIGWINCH)
        os.kill(old, signal.SIGQUIT)
        self.current["nginx"] = new
        self.nginx_draining = old
        return {"ok": bool(workers), "how": "new workers up" if workers else "no new workers",
                "old": old, "new": new, "waited_for_previous": waited}

    def nginx_master(self, old):
        """The live master in nginx's pid file, if it is not `old`."""
        try:
            pid = int(open(self.ng_pid).read().strip())
        except (OSError, ValueError):
            return None
        return pid if pid != old and alive(pid) else None

    # --- one run ---

    def wrk(self, name, load, duration):
        cmd = ["wrk", "-c", "32", "-t", "2", "-d", "%ds" % duration, "--latency"]
        if load == "close":
            cmd += ["-H", "Connection: close"]
        cmd.append("http://%s:80/index.html" % VIPS[name])
        out = os.path.join(self.dir, "wrk.out")
        f = open(out, "w")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        f.close()
        self.popens.append(p)
        return p, out

    def run_one(self, name, load, upgrades):
        d = self.args.duration
        t0 = time.monotonic()
        wrk, out = self.wrk(name, load, d)
        probe = Probe(VIPS[name], t0)
        probe.start()
        steps = []
        snapshot = None
        for i in range(upgrades):
            at = t0 + d * (i + 0.5) / upgrades
            pause = at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if time.monotonic() > t0 + d:
                print("    %s: %d of %d upgrades done when the load ended"
                      % (name, i, upgrades), flush=True)
                break
            start = time.monotonic() - t0
            step = self.upgrade(name)
            step["start"] = start
            step["at"] = time.monotonic() - t0
            steps.append(step)
            if not step["ok"]:
                print("    upgrade %d of %s failed: %s" % (i + 1, name, step["how"]), flush=True)
        if upgrades:
            pids = processes_in(self.sessions[name])
            snapshot = {"processes": len(pids), "rss_kib": run.rss_kib_of(pids)}
        try:
            wrk.wait(timeout=d + 30)
        except subprocess.TimeoutExpired:
            os.killpg(wrk.pid, signal.SIGKILL)
            wrk.wait(timeout=10)
        probe.stop()
        text = open(out).read()
        res = parse_wrk(text)
        res["probe"] = probe_summary(probe.samples, steps)
        res["wrk"] = text
        res["upgrades"] = steps
        if snapshot:
            res.update(after_upgrades=snapshot)
        # What is left once every old process should have drained and gone.
        expected = self.expected_processes(name)
        wait_for(lambda: len(processes_in(self.sessions[name])) <= expected,
                 self.args.drain + 10.0, 0.1)
        left = processes_in(self.sessions[name])
        res["left"] = {"processes": len(left), "expected": expected, "pids": left}
        if len(left) > expected:
            print("    %s: %d processes still alive %gs after the run (expected %d): %s"
                  % (name, len(left), self.args.drain + 10, expected, left), flush=True)
        return res

    def aftermath(self):
        """Exit codes of the proxies' processes that ended, and the warning
        and error lines of lb's logs (printed: they are what to look at)."""
        exits = {}
        for p in self.popens:
            if p.poll() is not None and p.args[0] == "prlimit":
                exits.setdefault(os.path.basename(p.args[2]), []).append(p.returncode)
        for prog, codes in sorted(exits.items()):
            odd = [c for c in codes if c != 0]
            print("  %s: %d processes ended, exit codes other than 0: %s"
                  % (prog, len(codes), odd or "none"), flush=True)
        lines = []
        for f in sorted(os.listdir(self.dir)):
            if f.startswith("lb-") and f.endswith(".log"):
                for line in open(os.path.join(self.dir, f), errors="replace"):
                    if re.search(r"\b(WARN|ERROR)\b", line):
                        lines.append("%s: %s" % (f, line.rstrip()))
        if lines:
            print("  lb's logs: %d warning or error lines; the first ones:" % len(lines))
            for line in lines[:10]:
                print("    " + line)
        return exits, lines

    def expected_processes(self, name):
        return 1 + (self.sub["THREADS"] if name == "nginx" else 0)

    def check_serving(self, name):
        if name == "lb":
            return http_get(LB_ADMIN, "/readyz")[0] == 200
        if name == "haproxy":
            return haproxy_pid(self.ha_sock) == self.current["haproxy"]
        return alive(self.current["nginx"])

    def all_runs(self):
        results = {}
        for load in LOADS:
            for name in self.args.proxies:
                for kind, n in (("none", 0), ("upgrades", self.args.upgrades)):
                    if not self.check_serving(name):
                        print("  %s is not serving before %s/%s; see %s" % (name, load, kind,
                                                                           self.dir), flush=True)
                    r = self.run_one(name, load, n)
                    results.setdefault(name, {}).setdefault(load, {})[kind] = r
                    errs = "connect %d read %d write %d timeout %d non2xx %d" % tuple(
                        r[k] for k in ("connect", "read", "write", "timeout", "non2xx"))
                    extra = ""
                    if n:
                        ok = sum(1 for s in r["upgrades"] if s["ok"])
                        worst = max((s["seconds"] for s in r["upgrades"]), default=0)
                        extra = "; %d/%d upgrades ok, slowest %.2f s" % (ok, n, worst)
                        if name == "lb":
                            other = [s for s in r["upgrades"] if s.get("admin_pid") != s["new"]]
                            if other:
                                extra += "; /api/v1/process named another pid after %d" % len(other)
                    print("  %-7s %-5s %-8s %9.0f req/s  p99 %7.2f ms  errors: %s%s"
                          % (name, load, kind, r["rps"], r["p99_ms"], errs, extra), flush=True)
                    pr = r["probe"]
                    print("          probe: %d connections, %d failed, p99 %.1f ms, max %.1f ms"
                          % (pr["count"], pr["failures"], pr["p99_ms"], pr["max_ms"]), flush=True)
                    for f in pr["failed"][:5]:
                        print("            failed at %.2f s, %s: %s" % (f["t"], f["where"], f["error"]),
                              flush=True)
                    if n:
                        for w in pr["slowest"][:3]:
                            print("            slow %.0f ms at %.2f s, %s" % (w["ms"], w["t"], w["where"]),
                                  flush=True)
                    time.sleep(0.5)
        return results


def errors_cell(r):
    parts = ["%s %d" % (k, r[k]) for k in ("connect", "read", "write", "timeout", "non2xx") if r[k]]
    return ", ".join(parts) if parts else "0"


def report(results, args):
    lines = ["", "%d upgrades over %d s per upgrade run; old processes drain for at most %g s"
             % (args.upgrades, args.duration, args.drain), "",
             "| proxy | load | req/s none | req/s upgrades | errors none | errors upgrades "
             "| p99 ms none | p99 ms upgrades | p99 ratio | upgrades ok | RSS after upgrades "
             "(processes) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.proxies:
        for load in LOADS:
            none = results[name][load]["none"]
            up = results[name][load]["upgrades"]
            ratio = up["p99_ms"] / none["p99_ms"] if none["p99_ms"] else float("nan")
            ok = sum(1 for s in up["upgrades"] if s["ok"])
            snap = up.get("after_upgrades", {"rss_kib": 0, "processes": 0})
            lines.append("| %s | %s | %.0f | %.0f | %s | %s | %.2f | %.2f | %.2f | %d/%d | "
                         "%.1f MiB (%d) |" % (
                             name, load, none["rps"], up["rps"], errors_cell(none), errors_cell(up),
                             none["p99_ms"], up["p99_ms"], ratio, ok, args.upgrades,
                             snap["rss_kib"] / 1024, snap["processes"]))
    lines += ["", "The probe: one new connection every 10 ms beside wrk, each timed.", "",
              "| proxy | load | probe connections (none / upgrades) | failed | p99 ms | max ms |",
              "|---|---|---|---|---|---|"]
    for name in args.proxies:
        for load in LOADS:
            n = results[name][load]["none"]["probe"]
            u = results[name][load]["upgrades"]["probe"]
            lines.append("| %s | %s | %d / %d | %d / %d | %.1f / %.1f | %.1f / %.1f |" % (
                name, load, n["count"], u["count"], n["failures"], u["failures"], n["p99_ms"],
                u["p99_ms"], n["max_ms"], u["max_ms"]))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upgrades", type=int, default=20, help="upgrades per upgrade run")
    ap.add_argument("--duration", type=int, default=20, help="seconds per run")
    ap.add_argument("--drain", type=float, default=2.0,
                    help="seconds an old process may drain (all three proxies)")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(HERE, "..", "..", "target")
    ap.add_argument("--lb-bin", default=os.path.join(target, "release", "lb-proxy"))
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = ap.parse_args()
    args.proxies = [p for p in args.proxies.split(",") if p]
    for p in args.proxies:
        if p not in PROXIES:
            sys.exit("unknown proxy %s (lb, haproxy, nginx)" % p)
    for tool in ("haproxy", NGINX, "wrk", "prlimit"):
        if not shutil.which(tool):
            sys.exit("missing %s: apt-get install haproxy nginx-light libnginx-mod-stream wrk" % tool)
    if "lb" in args.proxies and not os.path.exists(args.lb_bin):
        sys.exit("no lb-proxy at %s: cargo build --release -p lb-proxy" % args.lb_bin)

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    b = Bench(args)
    try:
        b.start()
        print("work dir %s" % b.dir, flush=True)
        results = b.all_runs()
        exits, lines = b.aftermath()
        print(report(results, args))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"results": results, "exits": exits, "log_lines": lines,
                           "args": vars(args)}, f, indent=1)
    except KeyboardInterrupt:
        print("interrupted: stopping every process started", file=sys.stderr)
        sys.exit(130)
    finally:
        b.close()


if __name__ == "__main__":
    main()
