#!/usr/bin/env python3
"""Configuration reload under load: lb-proxy, HAProxy and nginx (stream) in one run.

Each proxy serves, in front of one backend, the service wrk loads plus K
other services (--services, default 20) that take no load, so that "one
service changed" has something to change:

    lb       127.0.70.1:80, others 127.0.70.10.. :80, admin on 127.0.70.1:10249
    haproxy  127.0.71.1:80, others 127.0.71.10.. :80 (mode tcp, nbthread = cores)
    nginx    127.0.72.1:80, others 127.0.72.10.. :80 (stream, workers = cores)
    backend  nginx serving a 1 KiB file on 127.0.73.1:8080 and 127.0.73.2:8080

(its own addresses, so that it runs beside run.py and takeover.py). The
proxies' settings are those of run.py's templates (lb.toml.in,
haproxy.cfg.in, nginx-stream.conf.in), with the other services added.

For each of two loads, both `wrk -c 32 -t 2 -d D --latency`:

    close    with `Connection: close` (a new connection for every request:
             a reload that drops or stalls accepts shows up here)
    ka       keep-alive (connections that live across every reload)

and for each proxy it runs the load twice: once with no reload, once while
the configuration is rewritten every --interval seconds (default 0.2 s; the
number of reloads is D / interval: 50 with the default D = 10 s). Each
rewrite changes one of the K other services, in turn: it gains a second
endpoint (127.0.73.2:8080) if it has one, loses it if it has two; the
service under load never changes. Each proxy reloads the way its
documentation says:

    lb       the TOML file is written whole beside itself and renamed over
             (no signal: lb's file watch sees it). The reload is done when
             lb logs "config reloaded" (failed: "reload failed validation");
             its log is read, lb is not polled. After the run its
             lb_config_reloads_total{result} and /api/v1/endpoints are
             checked against what was written.
    haproxy  `haproxy -db -f F -x SOCK -sf OLDPID` (a new process per
             reload; it takes the listeners over the stats socket,
             `expose-fd listeners`, then tells the old one to finish; OLDPID
             is the pid `-p PIDFILE` would hold, which HAProxy writes only
             as a daemon). Done when `show info` on SOCK answers with the
             new process's pid.
    nginx    the file is rewritten (renamed over), then `nginx -s reload`
             (HUP to the master). Done when the master has as many new
             workers as `worker_processes` (cores).

A reload step waits until its reload is done (at most 5 s, then it counts
as failed) and the next one starts at its slot or at once if it is late;
the reloads that fit in D are made and counted. Old processes drain their
open connections for at most --drain seconds (the same bound for all three:
lb's `[proxy] drain_timeout`, HAProxy's `hard-stop-after`, nginx's
`worker_shutdown_timeout`); a keep-alive client whose connection an old
HAProxy process or nginx worker holds is cut there (wrk: a read error, then
it reconnects). lb keeps one process: a reload changes its table in place.

It reports per proxy and load: requests/s, wrk's errors (Socket errors:
connect/read/write/timeout, and Non-2xx), p99 latency with no reload and
with reloads and their ratio, reloads done / failed / scheduled, the reload
latency (write or spawn to done) median and max, and the resident memory
(summed over all the proxy's processes, old ones included: every process
in the sessions it started) with the process count before the run, right
after the last reload and --drain + 0.5 s after it. For lb it states PASS
or FAIL against issue 21's target: 0 errors with reloads and p99(reloads)
<= 1.1 x p99(none), and its CPU time per run (/proc) with the CPU a reload
costs beyond the requests' share. Beside wrk, a probe opens one new
connection every 10 ms and times it, placing a failure or stall against the
reloads. With --rounds N the order of the proxies rotates every round and
the table shows medians (the p99 ratio is the median of each round's ratio
of its two runs; errors and reload failures are summed); --json writes
every raw figure. A keep-alive p99 of 1-2 ms doubles with a few ms of CPU
taken elsewhere on a small machine: take --rounds 3 on a quiet one before
reading a ratio (the load average at the start and end is printed).

    benches/compare/reload.py [--duration 10] [--interval 0.2] [--services 20] \\
        [--drain 2] [--rounds 1] [--lb-bin PATH] [--proxies lb,haproxy,nginx] \\
        [--loads close,ka] [--json out.json] [--keep]

A full default run (1 round) takes about 2.5 minutes. Needs haproxy, nginx
with libnginx-mod-stream (/usr/sbin/nginx), wrk, prlimit and root (nginx's
`user root`). The lb binary is copied into the work directory first. Every
step is bounded in time, every address is on loopback, and every process
it started is killed when it ends (also on Ctrl-C or SIGTERM). Not part of
.ci/run: this is a benchmark.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the tree for these imports
sys.path.insert(0, HERE)
import run  # noqa: E402  (templates, rendering, RSS, ports)
import takeover  # noqa: E402  (sessions, wrk's output, the probe, HAProxy's stats socket)

BACKEND = "127.0.73.1"
BACKEND2 = "127.0.73.2"  # the endpoint a reload adds to or removes from a service
VIPS = {"lb": "127.0.70.1", "haproxy": "127.0.71.1", "nginx": "127.0.72.1"}
LB_ADMIN = ("127.0.70.1", 10249)
PROXIES = ["lb", "haproxy", "nginx"]
LOADS = ["close", "ka"]
NGINX = "/usr/sbin/nginx"
STEP_BOUND = 5.0  # seconds one reload may take before it counts as failed
TARGET_RATIO = 1.1  # issue 21: p99 with reloads at most 1.1 x without, for lb

session_of, alive, processes_in = takeover.session_of, takeover.alive, takeover.processes_in
wait_for, http_get = takeover.wait_for, takeover.http_get


def other_vip(name, i):
    """The address of other service `i` of proxy `name` (127.0.7x.10 + i)."""
    return VIPS[name].rsplit(".", 1)[0] + ".%d" % (10 + i)


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def probe_summary(samples, steps):
    """The probe's figures, each slow or failed connection placed against
    the reloads (takeover.py's summary, in reload.py's words)."""
    return takeover.probe_summary(samples, steps, event="reload", span="its")


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="lb-reload-")
        self.popens = []  # every Popen, each in its own session
        self.sessions = {}  # proxy -> set of session ids of its processes
        self.current = {}  # proxy -> pid of the process (master) serving now
        self.generation = {p: 0 for p in PROXIES}
        # proxy -> which other services have the second endpoint (as written)
        self.extra = {p: [False] * args.services for p in PROXIES}
        self.turn = {p: 0 for p in PROXIES}  # the next other service to change
        self.lb_log_at = 0  # how far lb's log has been read
        self.lb_seen = {"ok": 0, "failed": 0}
        self.threads = os.cpu_count() or 1
        self.sub = dict(DIR=self.dir, BACKEND=BACKEND, THREADS=self.threads, NOFILE=run.NOFILE,
                        MAXCONN=(run.NOFILE - 1000) // 2, HOLD_PORT=9000)

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
        """Every process started here and everything in their sessions (old
        HAProxy processes, nginx's workers, wrk, `nginx -s reload`)."""
        takeover.end_sessions(self.popens)

    def close(self):
        self.kill_all()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- configurations ---

    def base_configs(self):
        """The templates of run.py as takeover.py adapts them, with this
        script's addresses and drain bound; the other services are added to
        these bases at every write."""
        d, drain = self.dir, self.args.drain
        lb = open(run.render("lb.toml.in", os.path.join(d, "lb.base"), VIP=VIPS["lb"],
                             **self.sub)).read()
        for old, new in [('service_cidr = "127.0.48.0/20"', 'service_cidr = "127.0.70.0/24"'),
                         ('name = "bench"', 'name = "reload-bench"'),
                         ('[admin]\nlisten = ""', '[admin]\nlisten = "%s:%d"' % LB_ADMIN),
                         ("[proxy]\n", '[proxy]\ndrain_timeout = "%gs"\n' % drain)]:
            if old not in lb:
                sys.exit("lb.toml.in changed: %r not found" % old)
            lb = lb.replace(old, new, 1)
        self.lb_base = lb
        self.lb_conf = os.path.join(d, "lb.toml")

        self.ha_sock = os.path.join(d, "haproxy.sock")
        ha = open(run.render("haproxy.cfg.in", os.path.join(d, "haproxy.base"),
                             VIP=VIPS["haproxy"], **self.sub)).read()
        ha = ha.replace("global\n", "global\n    stats socket %s mode 600 level admin expose-fd "
                        "listeners\n    hard-stop-after %gs\n" % (self.ha_sock, drain), 1)
        self.ha_base = ha
        self.ha_conf = os.path.join(d, "haproxy.cfg")

        ng = open(run.render("nginx-stream.conf.in", os.path.join(d, "nginx.base"),
                             VIP=VIPS["nginx"], **self.sub)).read()
        if "daemon off;\n" not in ng or not ng.rstrip().endswith("}"):
            sys.exit("nginx-stream.conf.in changed: no `daemon off;` or no closing stream block")
        ng = ng.replace("daemon off;\n", "daemon off;\nworker_shutdown_timeout %gs;\n" % drain, 1)
        self.ng_base = ng
        self.ng_conf = os.path.join(d, "nginx-stream.conf")
        self.ng_pid = os.path.join(d, "nginx-stream.pid")  # as the template says

    def lb_text(self):
        out = [self.lb_base]
        for i, two in enumerate(self.extra["lb"]):
            ips = ", ".join('{ ip = "%s" }' % ip for ip in ([BACKEND, BACKEND2] if two else [BACKEND]))
            out.append('\n[[services]]\nname = "other-%d"\ncluster_ip = "%s"\n'
                       '[[services.ports]]\nname = "http"\nport = 80\n\n'
                       '[[endpoints]]\nname = "other-%d"\n[[endpoints.subsets]]\n'
                       'addresses = [%s]\nports = [{ name = "http", port = 8080 }]\n'
                       % (i, other_vip("lb", i), i, ips))
        return "".join(out)

    def ha_text(self):
        out = [self.ha_base]
        for i, two in enumerate(self.extra["haproxy"]):
            out.append("\nlisten other-%d\n    bind %s:80\n    server b1 %s:8080\n"
                       % (i, other_vip("haproxy", i), BACKEND))
            if two:
                out.append("    server b2 %s:8080\n" % BACKEND2)
        return "".join(out)

    def ng_text(self):
        body = []
        for i, two in enumerate(self.extra["nginx"]):
            servers = " ".join("server %s:8080;" % ip for ip in ([BACKEND, BACKEND2] if two else [BACKEND]))
            body.append("    upstream other_%d { %s }\n    server { listen %s:80; proxy_pass other_%d; }\n"
                        % (i, servers, other_vip("nginx", i), i))
        head, _, tail = self.ng_base.rstrip().rpartition("}")
        return head + "".join(body) + "}" + tail + "\n"

    def write_config(self, name):
        path, text = {"lb": (self.lb_conf, self.lb_text), "haproxy": (self.ha_conf, self.ha_text),
                      "nginx": (self.ng_conf, self.ng_text)}[name]
        write_atomically(path, text())

    # --- set-up ---

    def backend(self):
        """run.py's backend (nginx, 1 KiB file) listening on both endpoint
        addresses."""
        d = self.dir
        os.makedirs(os.path.join(d, "www"))
        os.makedirs(os.path.join(d, "tmp"))
        with open(os.path.join(d, "www", "index.html"), "w") as f:
            f.write("x" * 1023 + "\n")
        conf = open(run.render("nginx-backend.conf.in", os.path.join(d, "nginx-backend.conf"),
                               **self.sub)).read()
        listen = "listen %s:8080 backlog=4096;" % BACKEND
        if listen not in conf:
            sys.exit("nginx-backend.conf.in changed: %r not found" % listen)
        conf = conf.replace(listen, listen + "\n        listen %s:8080 backlog=4096;" % BACKEND2, 1)
        open(os.path.join(d, "nginx-backend.conf"), "w").write(conf)
        self.spawn("backend", [NGINX, "-p", d, "-c", os.path.join(d, "nginx-backend.conf")])
        for ip in (BACKEND, BACKEND2):
            if not run.wait_port(ip, 8080):
                sys.exit("backend on %s:8080 did not come up; see %s/backend.log" % (ip, d))

    def start(self):
        d, args = self.dir, self.args
        addrs = [(BACKEND, 8080), (BACKEND2, 8080), LB_ADMIN]
        for name in args.proxies:
            addrs += [(VIPS[name], 80)] + [(other_vip(name, i), 80) for i in range(args.services)]
        for ip, port in addrs:
            if run.wait_port(ip, port, 0.05):
                sys.exit("%s:%d is already in use: stop what listens there first" % (ip, port))
        self.backend()
        self.base_configs()
        if "lb" in args.proxies:
            self.lb_bin = os.path.join(d, "lb-proxy")
            shutil.copy2(args.lb_bin, self.lb_bin)
        for name in args.proxies:
            self.write_config(name)
            if name == "lb":
                env = dict(os.environ, RUST_LOG="info", LB_RUNTIME_DIR=os.path.join(d, "run-lb"))
                p = self.spawn("lb", [self.lb_bin, "run", "--config", self.lb_conf,
                                      "--runtime-dir", os.path.join(d, "run-lb")], env=env)
            elif name == "haproxy":
                p = self.spawn("haproxy-0", ["haproxy", "-db", "-f", self.ha_conf])
            else:
                p = self.spawn("nginx", [NGINX, "-p", d, "-c", self.ng_conf])
            self.track(name, p)
            for ip in [VIPS[name]] + [other_vip(name, i) for i in range(args.services)]:
                if not run.wait_port(ip, 80, 30.0):
                    sys.exit("%s does not listen on %s:80; see the logs in %s" % (name, ip, d))
        if "lb" in args.proxies:
            if wait_for(lambda: http_get(LB_ADMIN, "/readyz")[0] == 200, 30.0, 0.1) is None:
                sys.exit("lb's /readyz is not 200; see %s/lb.log" % d)
        if "haproxy" in args.proxies:
            if wait_for(lambda: takeover.haproxy_pid(self.ha_sock), 10.0) is None:
                sys.exit("haproxy's stats socket does not answer; see %s/haproxy-0.log" % d)
        if "nginx" in args.proxies:
            master = self.current["nginx"]
            if wait_for(lambda: len(self.nginx_workers()) >= self.threads, 10.0) is None:
                sys.exit("nginx has no workers; see %s/nginx-stream.err" % d)
            pid = wait_for(lambda: self.read_pid(self.ng_pid), 5.0)
            if pid != master:
                sys.exit("nginx's pid file names %s, not the master %d" % (pid, master))
        time.sleep(0.5)
        for p in self.popens:
            if p.poll() is not None:
                sys.exit("%s exited at start; see the logs in %s" % (p.args, d))

    @staticmethod
    def read_pid(path):
        try:
            return int(open(path).read().strip())
        except (OSError, ValueError):
            return None

    def nginx_workers(self):
        return [p for p in run.pids_of(self.current["nginx"]) if p != self.current["nginx"]]

    # --- one reload each ---

    def reload(self, name):
        """Changes the next other service of `name` and reloads it; returns a
        dict with ok, how, seconds (never raises for a failed reload)."""
        i = self.turn[name]
        self.turn[name] = (i + 1) % self.args.services
        self.extra[name][i] = not self.extra[name][i]
        self.generation[name] += 1
        t0 = time.monotonic()
        res = getattr(self, "reload_" + name)(self.generation[name])
        res["seconds"] = time.monotonic() - t0
        res["service"] = i
        res["endpoints"] = 2 if self.extra[name][i] else 1
        return res

    def lb_log(self):
        """lb's reloads logged since the last look: adds them to lb_seen."""
        try:
            with open(os.path.join(self.dir, "lb.log"), "rb") as f:
                f.seek(self.lb_log_at)
                data = f.read()
        except OSError:
            return self.lb_seen
        end = data.rfind(b"\n") + 1  # whole lines only
        self.lb_log_at += end
        for line in data[:end].split(b"\n"):
            if b"config reloaded" in line:
                self.lb_seen["ok"] += 1
            elif b"reload failed validation" in line:
                self.lb_seen["failed"] += 1
        return self.lb_seen

    def reload_lb(self, gen):
        seen = dict(self.lb_log())
        self.write_config("lb")

        def done():
            now = self.lb_log()
            if now["failed"] > seen["failed"]:
                return "failed validation"
            if now["ok"] > seen["ok"]:
                return "config reloaded"
            return None

        how = wait_for(done, STEP_BOUND, 0.005)
        return {"ok": how == "config reloaded", "how": how or "not seen in the log"}

    def reload_haproxy(self, gen):
        old = self.current["haproxy"]
        self.write_config("haproxy")
        p = self.spawn("haproxy-%d" % gen, ["haproxy", "-db", "-f", self.ha_conf, "-x",
                                             self.ha_sock, "-sf", str(old)])
        seen = wait_for(lambda: takeover.haproxy_pid(self.ha_sock) == p.pid or p.poll() is not None,
                        STEP_BOUND)
        ok = bool(seen) and p.poll() is None
        self.sessions["haproxy"].add(p.pid)
        if ok:
            self.current["haproxy"] = p.pid
        return {"ok": ok, "how": "stats socket answers" if ok else
                ("new process exited %s" % p.poll() if p.poll() is not None else "timed out"),
                "old": old, "new": p.pid}

    def reload_nginx(self, gen):
        before = set(self.nginx_workers())
        self.write_config("nginx")
        p = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.ng_conf, "-s", "reload"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.popens.append(p)
        try:
            out, _ = p.communicate(timeout=STEP_BOUND)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
            return {"ok": False, "how": "`nginx -s reload` timed out"}
        if p.returncode != 0:
            return {"ok": False, "how": "`nginx -s reload` exited %d: %s"
                    % (p.returncode, out.decode(errors="replace").strip()[:200])}
        new = wait_for(lambda: len(set(self.nginx_workers()) - before) >= self.threads, STEP_BOUND,
                       0.005)
        return {"ok": bool(new), "how": "new workers up" if new else "no new workers (see "
                "nginx-stream.err)"}

    # --- checks ---

    def processes(self, name):
        pids = processes_in(self.sessions[name])
        return {"processes": len(pids), "rss_kib": run.rss_kib_of(pids)}

    def expected_processes(self, name):
        return 1 + (self.threads if name == "nginx" else 0)

    def check_serving(self, name):
        if name == "lb":
            return http_get(LB_ADMIN, "/readyz")[0] == 200
        if name == "haproxy":
            return takeover.haproxy_pid(self.ha_sock) == self.current["haproxy"]
        return alive(self.current["nginx"])

    def others_answer(self, name):
        """How many of the other services answer a GET with 200."""
        return sum(1 for i in range(self.args.services)
                   if http_get((other_vip(name, i), 80), "/index.html")[0] == 200)

    def lb_state(self):
        """lb's own account after a run: its reload counters and whether
        /api/v1/endpoints shows each other service with the endpoints last
        written."""
        status, body = http_get(LB_ADMIN, "/metrics", 5.0)
        counters = {}
        if status == 200:
            for m in re.finditer(r'^lb_config_reloads_total\{result="(\w+)"\} (\d+)', body, re.M):
                counters[m.group(1)] = int(m.group(2))
        status, body = http_get(LB_ADMIN, "/api/v1/endpoints", 5.0)
        mismatched = None
        if status == 200:
            mismatched = []
            counts = endpoint_counts(body)
            for i, two in enumerate(self.extra["lb"]):
                want = 2 if two else 1
                if counts.get("other-%d" % i) != want:
                    mismatched.append("other-%d: %s endpoints, written %d"
                                      % (i, counts.get("other-%d" % i), want))
        return {"reloads_total": counters, "endpoints_mismatched": mismatched}

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

    def run_one(self, name, load, reloads):
        d, every, drain = self.args.duration, self.args.interval, self.args.drain
        before = self.processes(name)
        cpu0 = run.cpu_seconds(self.current["lb"]) if name == "lb" else None
        t0 = time.monotonic()
        wrk, out = self.wrk(name, load, d)
        probe = takeover.Probe(VIPS[name], t0)
        probe.start()
        steps = []
        snapshot = None
        for k in range(reloads):
            pause = t0 + every * (k + 0.5) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if time.monotonic() > t0 + d:
                break
            start = time.monotonic() - t0
            step = self.reload(name)
            step["start"] = start
            step["at"] = time.monotonic() - t0
            steps.append(step)
            if not step["ok"]:
                print("    reload %d of %s failed: %s" % (k + 1, name, step["how"]), flush=True)
        last = t0 + (steps[-1]["at"] if steps else 0)
        if reloads:
            snapshot = self.processes(name)
        try:
            wrk.wait(timeout=d + 30)
        except subprocess.TimeoutExpired:
            os.killpg(wrk.pid, signal.SIGKILL)
            wrk.wait(timeout=10)
        probe.stop()
        cpu = run.cpu_seconds(self.current["lb"]) - cpu0 if name == "lb" else None
        text = open(out).read()
        res = takeover.parse_wrk(text)
        res["errors"] = sum(res[k] for k in ("connect", "read", "write", "timeout", "non2xx"))
        res["probe"] = probe_summary(probe.samples, steps)
        res["wrk"] = text
        res["before"] = before
        res["scheduled"] = reloads
        if cpu is not None:
            res["lb_cpu_s"] = cpu
        res["reloads"] = steps
        if reloads:
            res["after_reloads"] = snapshot
            pause = last + drain + 0.5 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            res["after_drain"] = self.processes(name)
            res["others_answering"] = self.others_answer(name)
            if name == "lb":
                res["lb_state"] = self.lb_state()
        # What is left once every old process should have drained and gone.
        expected = self.expected_processes(name)
        wait_for(lambda: len(processes_in(self.sessions[name])) <= expected, drain + 10.0, 0.1)
        left = processes_in(self.sessions[name])
        res["left"] = {"processes": len(left), "expected": expected, "pids": left}
        if len(left) > expected:
            print("    %s: %d processes still alive %gs after the run (expected %d): %s"
                  % (name, len(left), drain + 10, expected, left), flush=True)
        return res

    def all_runs(self):
        args = self.args
        n = max(1, int(round(args.duration / args.interval)))
        rounds = []
        for r in range(args.rounds):
            rot = args.proxies[r % len(args.proxies):] + args.proxies[:r % len(args.proxies)]
            results = {}
            for load in args.loads:
                for name in rot:
                    for kind, count in (("none", 0), ("reloads", n)):
                        if not self.check_serving(name):
                            print("  %s is not serving before %s/%s; see %s"
                                  % (name, load, kind, self.dir), flush=True)
                        res = self.run_one(name, load, count)
                        results.setdefault(name, {}).setdefault(load, {})[kind] = res
                        print_run(r, name, load, kind, res, args)
                        time.sleep(0.5)
            rounds.append(results)
        return rounds

    def aftermath(self):
        """Exit codes of the proxies' processes that ended, and the warning
        and error lines of lb's log (printed: they are what to look at)."""
        exits = {}
        for p in self.popens:
            if p.poll() is not None and p.args[0] == "prlimit":
                exits.setdefault(os.path.basename(p.args[2]), []).append(p.returncode)
        for prog, codes in sorted(exits.items()):
            odd = [c for c in codes if c != 0]
            print("  %s: %d processes ended, exit codes other than 0: %s"
                  % (prog, len(codes), odd or "none"), flush=True)
        lines = []
        try:
            for line in open(os.path.join(self.dir, "lb.log"), errors="replace"):
                if re.search(r"\b(WARN|ERROR)\b", line):
                    lines.append(line.rstrip())
        except OSError:
            pass
        if lines:
            print("  lb's log: %d warning or error lines; the first ones:" % len(lines))
            for line in lines[:10]:
                print("    " + line)
        return exits, lines


def endpoint_counts(body):
    """Service name -> number of ready endpoints in an /api/v1/endpoints
    answer ({"items": [{"name", "endpoints": [{"ready", ...}]}]})."""
    try:
        items = json.loads(body).get("items") or []
    except (ValueError, AttributeError):
        return {}
    return {it.get("name"): sum(1 for e in it.get("endpoints") or [] if e.get("ready"))
            for it in items if isinstance(it, dict)}


def step_stats(steps):
    ms = sorted(s["seconds"] * 1000 for s in steps if s["ok"])
    return {"done": len(steps), "ok": len(ms), "failed": len(steps) - len(ms),
            "median_ms": statistics.median(ms) if ms else float("nan"),
            "max_ms": ms[-1] if ms else float("nan")}


def print_run(r, name, load, kind, res, args):
    errs = "connect %d read %d write %d timeout %d non2xx %d" % tuple(
        res[k] for k in ("connect", "read", "write", "timeout", "non2xx"))
    extra = ""
    if kind == "reloads":
        st = step_stats(res["reloads"])
        extra = ("; reloads %d ok, %d failed of %d scheduled, median %.0f ms, max %.0f ms"
                 % (st["ok"], st["failed"], res["scheduled"], st["median_ms"], st["max_ms"]))
    print("  round %d %-7s %-5s %-8s %9.0f req/s  p99 %7.2f ms  errors: %s%s"
          % (r + 1, name, load, kind, res["rps"], res["p99_ms"], errs, extra), flush=True)
    pr = res["probe"]
    print("          probe: %d connections, %d failed, p99 %.1f ms, max %.1f ms"
          % (pr["count"], pr["failures"], pr["p99_ms"], pr["max_ms"]), flush=True)
    for f in pr["failed"][:5]:
        print("            failed at %.2f s, %s: %s" % (f["t"], f["where"], f["error"]), flush=True)
    if kind == "reloads":
        for w in pr["slowest"][:2]:
            print("            slow %.0f ms at %.2f s, %s" % (w["ms"], w["t"], w["where"]), flush=True)
        a, b = res["after_reloads"], res["after_drain"]
        print("          RSS %.1f MiB (%d processes) before, %.1f MiB (%d) after the last reload, "
              "%.1f MiB (%d) %.1f s later; %d/%d other services answer"
              % (res["before"]["rss_kib"] / 1024, res["before"]["processes"], a["rss_kib"] / 1024,
                 a["processes"], b["rss_kib"] / 1024, b["processes"], args.drain + 0.5,
                 res["others_answering"], args.services), flush=True)
        if "lb_state" in res:
            s = res["lb_state"]
            print("          lb: lb_config_reloads_total %s; endpoints not as written: %s"
                  % (s["reloads_total"], "unknown" if s["endpoints_mismatched"] is None
                     else (s["endpoints_mismatched"][:3] or "none")), flush=True)


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def summarize(rounds, name, load):
    """Medians (sums for errors and failures) over the rounds of one proxy
    and load."""
    none = [r[name][load]["none"] for r in rounds]
    rel = [r[name][load]["reloads"] for r in rounds]
    stats = [step_stats(x["reloads"]) for x in rel]
    s = {
        "rps_none": med([x["rps"] for x in none]), "rps_reloads": med([x["rps"] for x in rel]),
        "errors_none": sum(x["errors"] for x in none), "errors_reloads": sum(x["errors"] for x in rel),
        "kinds_none": {k: sum(x[k] for x in none) for k in ("connect", "read", "write", "timeout",
                                                           "non2xx")},
        "kinds_reloads": {k: sum(x[k] for x in rel) for k in ("connect", "read", "write", "timeout",
                                                             "non2xx")},
        "p99_none": med([x["p99_ms"] for x in none]), "p99_reloads": med([x["p99_ms"] for x in rel]),
        "reloads_ok": sum(x["ok"] for x in stats), "reloads_failed": sum(x["failed"] for x in stats),
        "reloads_scheduled": sum(x["scheduled"] for x in rel),
        "reload_median_ms": med([x["median_ms"] for x in stats]),
        "reload_max_ms": max([x["max_ms"] for x in stats if x["max_ms"] == x["max_ms"]],
                             default=float("nan")),
        "rss_before_kib": med([x["before"]["rss_kib"] for x in rel]),
        "procs_before": med([x["before"]["processes"] for x in rel]),
        "rss_after_kib": med([x["after_reloads"]["rss_kib"] for x in rel]),
        "procs_after": med([x["after_reloads"]["processes"] for x in rel]),
        "rss_drained_kib": med([x["after_drain"]["rss_kib"] for x in rel]),
        "procs_drained": med([x["after_drain"]["processes"] for x in rel]),
        "probe_failed_none": sum(x["probe"]["failures"] for x in none),
        "probe_failed_reloads": sum(x["probe"]["failures"] for x in rel),
        "probe_p99_none": med([x["probe"]["p99_ms"] for x in none]),
        "probe_p99_reloads": med([x["probe"]["p99_ms"] for x in rel]),
        "probe_max_none": max(x["probe"]["max_ms"] for x in none),
        "probe_max_reloads": max(x["probe"]["max_ms"] for x in rel),
    }
    # Each round's ratio pairs two runs made one after the other, so a drift
    # of the machine's other load between rounds cancels: their median.
    s["p99_ratios"] = [r["p99_ms"] / n["p99_ms"] if n["p99_ms"] else float("nan")
                       for n, r in zip(none, rel)]
    s["p99_ratio"] = med(s["p99_ratios"])
    if name == "lb":
        # lb's CPU time per run, and what the reloads add: the reload run's
        # CPU less the no-reload run's CPU per request times the reload
        # run's requests, per reload.
        s["cpu_none_s"] = med([x["lb_cpu_s"] for x in none])
        s["cpu_reloads_s"] = med([x["lb_cpu_s"] for x in rel])
        extra = [(r["lb_cpu_s"] - n["lb_cpu_s"] * r["requests"] / n["requests"]) / len(r["reloads"])
                 for n, r in zip(none, rel) if n["requests"] and r["reloads"]]
        s["cpu_per_reload_ms"] = med(extra) * 1000
        s["pass"] = (s["errors_reloads"] == 0 and s["p99_ratio"] <= TARGET_RATIO
                     and s["reloads_failed"] == 0)
    return s


def errors_cell(total, kinds):
    if not total:
        return "0"
    return "%d (%s)" % (total, ", ".join("%s %d" % (k, v) for k, v in kinds.items() if v))


def report(summary, args, n):
    lines = ["", "%d round(s); per reload run %d reloads scheduled (every %g s over %d s), one of %d "
             "other services changed each time; old processes drain for at most %g s%s"
             % (args.rounds, n, args.interval, args.duration, args.services, args.drain,
                "; medians over the rounds (the p99 ratio: the median of each round's ratio), errors and "
                "failures summed" if args.rounds > 1 else ""),
             "",
             "| proxy | load | req/s none | req/s reloads | errors none | errors reloads "
             "| p99 ms none | p99 ms reloads | p99 ratio | reloads ok / failed / scheduled "
             "| reload ms median / max | RSS MiB (processes): before | after last reload "
             "| +%gs | target |" % (args.drain + 0.5),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.proxies:
        for load in args.loads:
            s = summary[name][load]
            verdict = "-"
            if name == "lb":
                verdict = "PASS" if s["pass"] else "FAIL"
            lines.append(
                "| %s | %s | %.0f | %.0f | %s | %s | %.2f | %.2f | %.2f | %d / %d / %d | %.0f / %.0f "
                "| %.1f (%d) | %.1f (%d) | %.1f (%d) | %s |" % (
                    name, load, s["rps_none"], s["rps_reloads"],
                    errors_cell(s["errors_none"], s["kinds_none"]),
                    errors_cell(s["errors_reloads"], s["kinds_reloads"]),
                    s["p99_none"], s["p99_reloads"], s["p99_ratio"], s["reloads_ok"],
                    s["reloads_failed"], s["reloads_scheduled"], s["reload_median_ms"],
                    s["reload_max_ms"], s["rss_before_kib"] / 1024, s["procs_before"],
                    s["rss_after_kib"] / 1024, s["procs_after"], s["rss_drained_kib"] / 1024,
                    s["procs_drained"], verdict))
    if "lb" in args.proxies:
        lines.append("")
        for load in args.loads:
            s = summary["lb"][load]
            lines.append("lb %s: CPU %.2f s with no reload, %.2f s with reloads: about %.1f ms of CPU "
                         "per reload beyond the requests' share" % (
                             load, s["cpu_none_s"], s["cpu_reloads_s"], s["cpu_per_reload_ms"]))
        if args.rounds == 1:
            lines.append("(one round: the verdict rests on one pair of runs; on a busy machine two runs "
                         "with no reload differ in p99 by more than 10%: --rounds 3 takes medians)")
    lines += ["", "target (lb, issue 21): 0 errors with reloads, p99 ratio <= %.1f, no failed reload. "
              "Reload ms: lb write -> \"config reloaded\" logged; haproxy spawn -> stats socket "
              "names the new pid; nginx `nginx -s reload` -> all new workers up." % TARGET_RATIO,
              "", "The probe: one new connection every 10 ms beside wrk, each timed.", "",
              "| proxy | load | probe failed (none / reloads) | p99 ms | max ms |",
              "|---|---|---|---|---|"]
    for name in args.proxies:
        for load in args.loads:
            s = summary[name][load]
            lines.append("| %s | %s | %d / %d | %.1f / %.1f | %.1f / %.1f |" % (
                name, load, s["probe_failed_none"], s["probe_failed_reloads"], s["probe_p99_none"],
                s["probe_p99_reloads"], s["probe_max_none"], s["probe_max_reloads"]))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between reloads")
    ap.add_argument("--services", type=int, default=20,
                    help="other services besides the one under load (1-200)")
    ap.add_argument("--drain", type=float, default=2.0,
                    help="seconds an old process may drain (all three proxies)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds (medians over them)")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--loads", default=",".join(LOADS))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(HERE, "..", "..", "target")
    ap.add_argument("--lb-bin", default=os.path.join(target, "release", "lb-proxy"))
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = ap.parse_args()
    args.proxies = [p for p in args.proxies.split(",") if p]
    args.loads = [x for x in args.loads.split(",") if x]
    for p in args.proxies:
        if p not in PROXIES:
            sys.exit("unknown proxy %s (lb, haproxy, nginx)" % p)
    for x in args.loads:
        if x not in LOADS:
            sys.exit("unknown load %s (close, ka)" % x)
    if not 1 <= args.services <= 200:
        sys.exit("--services must be 1-200")
    if args.interval <= 0 or args.duration < 1 or args.rounds < 1 or args.drain < 0:
        sys.exit("--interval, --duration and --rounds must be positive, --drain not negative")
    for tool in ("haproxy", NGINX, "wrk", "prlimit"):
        if not shutil.which(tool):
            sys.exit("missing %s: apt-get install haproxy nginx-light libnginx-mod-stream wrk" % tool)
    if "lb" in args.proxies and not os.path.exists(args.lb_bin):
        sys.exit("no lb-proxy at %s: cargo build --release -p lb-proxy" % args.lb_bin)

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    b = Bench(args)
    try:
        b.start()
        load_before = os.getloadavg()
        print("work dir %s; load average %.2f %.2f %.2f" % ((b.dir,) + load_before), flush=True)
        rounds = b.all_runs()
        load_after = os.getloadavg()
        exits, lines = b.aftermath()
        summary = {name: {load: summarize(rounds, name, load) for load in args.loads}
                   for name in args.proxies}
        n = max(1, int(round(args.duration / args.interval)))
        print(report(summary, args, n))
        print("\ntook %.0f s; load average (1, 5, 15 min) %.2f %.2f %.2f at the start, %.2f %.2f "
              "%.2f at the end, on %d cores (anything above what this run adds is another load's "
              "noise)" % ((time.monotonic() - started,) + load_before + load_after
                          + (os.cpu_count() or 1,)), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"summary": summary, "rounds": rounds, "exits": exits, "log_lines": lines,
                           "loadavg": {"start": load_before, "end": load_after},
                           "args": vars(args)}, f, indent=1)
    except KeyboardInterrupt:
        print("interrupted: stopping every process started", file=sys.stderr)
        sys.exit(130)
    finally:
        b.close()


if __name__ == "__main__":
    main()
