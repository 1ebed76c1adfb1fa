#!/usr/bin/env bash
# UDP forwarding benchmark (issues 3 and 21): dnsperf through lb-proxy, through
# nginx's stream module (proxy_responses 1) and straight to the backend, in
# interleaved rounds, flat out and at a fixed offered load (-Q).
#
# The backend (BACKEND=answer, the default) is examples/dns_answer.rs: it
# answers every A query from the datagram itself on BACKEND_THREADS threads
# (SO_REUSEPORT), two system calls per query, so it is not what limits the
# rate: straight to it dnsperf completes ~130-140k queries/s here, where
# dnsmasq (BACKEND=dnsmasq, `-c 0`, the backend of the first runs) tops out
# near 50k, below what the proxies can forward, which made every target look
# alike (lb measured 0.93x "direct" against dnsmasq's ~32k on a busier day).
#
#   benches/dns/udp_compare.sh                  # 3 rounds, -l 10, -Q 10000
#   BACKEND=dnsmasq benches/dns/udp_compare.sh  # the first runs' backend
#   ROUNDS=5 QPS=15000 benches/dns/udp_compare.sh
#   LB_BIN_ALT=/tmp/lb-proxy-new benches/dns/udp_compare.sh   # a 2nd lb-proxy build in the same run
#   LB_ALT_ENV="TOKIO_WORKER_THREADS=1" benches/dns/udp_compare.sh  # the same build, other environment
#
# Needs (Debian): dnsperf nginx-light libnginx-mod-stream dnsutils (dnsmasq-base
# with BACKEND=dnsmasq); builds the dns_answer example unless ANSWER_BIN names one.
# Loopback addresses only (127.0.153.0/24 and a cluster IP in 127.96.153.0/24);
# every server is killed at exit; every step is bounded in time (dnsperf -l plus
# a `timeout`, a watchdog for the whole script). Not run by .ci/run.
#
# Reported per target and mode (median over rounds): queries/s, queries lost,
# average latency (dnsperf), p99 latency (fixed load only: from dnsperf -v), and
# the proxy's CPU seconds per completed query (utime+stime delta of every
# process of the proxy, from /proc/PID/stat, divided by the queries completed),
# and, when `perf` can count tracepoints (COUNT=1, the default if it can), the
# proxy's system calls and context switches per completed query
# (`perf stat -e raw_syscalls:sys_enter,context-switches -p <proxy pids>`:
# exact counts, deterministic enough to compare builds on a busy machine).
# Those come from separate counted runs (COUNT_ROUNDS per proxy and mode, after
# the measured rounds), because counting slows the proxy and the rates and CPU
# times must not carry that cost. Besides the medians of each target, the
# summary gives the median of the per-round ratios lb/direct and lb/nginx
# (each round runs every target back to back, so a round's ratio is less
# exposed to the machine's drift than a ratio of medians).
#
#   STRACE=1 benches/dns/udp_compare.sh        # also one fixed-load run per proxy
#                                             # under `strace -f -c`: calls per query by name
set -euo pipefail

# The whole run is bounded: re-run this script under `timeout` (SIGTERM runs
# the exit trap, which stops every server).
WATCHDOG=${WATCHDOG:-1800}
if [ -z "${LB_BENCH_BOUNDED:-}" ]; then
    LB_BENCH_BOUNDED=1 exec timeout "$WATCHDOG" "$0" "$@"
fi

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
QPS=${QPS:-10000}
CLIENTS=${CLIENTS:-4}          # dnsperf -c: client sockets, so flows in lb-proxy
OUTSTANDING=${OUTSTANDING:-100} # dnsperf -q
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}
MODES=${MODES:-"flat fixed"}
STRACE=${STRACE:-}
COUNT_ROUNDS=${COUNT_ROUNDS:-2} # counted runs per proxy and mode (perf stat), apart from the measured rounds
STRACE_DURATION=${STRACE_DURATION:-5}
if [ -z "${COUNT:-}" ]; then
    COUNT=0
    perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 && COUNT=1
fi
# The system calls counted by name besides the total (those a UDP relay makes
# per datagram or per wake-up); any the kernel has no tracepoint for is left out.
PERF_EVENTS=raw_syscalls:sys_enter,context-switches
for call in recvfrom recvmsg recvmmsg sendto sendmsg sendmmsg epoll_wait epoll_pwait futex sched_yield; do
    [ -d "/sys/kernel/tracing/events/syscalls/sys_enter_$call" ] && PERF_EVENTS="$PERF_EVENTS,syscalls:sys_enter_$call"
done
PORT=${PORT:-5300}
BACKEND=${BACKEND:-answer}
BACKEND_THREADS=${BACKEND_THREADS:-2}
BACKEND_IP=127.0.153.1
NGINX_IP=127.0.153.3
LB_VIP=127.96.153.10
LB_ALT_VIP=127.96.153.11
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

for tool in dnsperf nginx dig; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf nginx-light libnginx-mod-stream dnsutils)" >&2; exit 2; }
done
case "$BACKEND" in
    answer) ;;
    dnsmasq) command -v dnsmasq >/dev/null || { echo "missing dnsmasq (apt-get install dnsmasq-base)" >&2; exit 2; } ;;
    *) echo "BACKEND is answer or dnsmasq, not $BACKEND" >&2; exit 2 ;;
esac
STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$STREAM_MOD" ] || { echo "missing $STREAM_MOD (apt-get install libnginx-mod-stream)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/lb-udp-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# LB_BIN: a release build of lb-proxy (default: build this tree's).
if [ -z "${LB_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -p lb-proxy >&2)
    LB_BIN="$ROOT/target/release/lb-proxy"
fi
# A private copy: other builds in the shared target dir must not swap it mid-run.
cp "$LB_BIN" "$WORK/lb-proxy"
# A second lb-proxy ("lb-alt"): another build, or the same one with LB_ALT_ENV.
LB_ALT_ENV=${LB_ALT_ENV:-}
[ -n "$LB_ALT_ENV" ] && [ -z "${LB_BIN_ALT:-}" ] && LB_BIN_ALT=$LB_BIN
[ -n "${LB_BIN_ALT:-}" ] && cp "$LB_BIN_ALT" "$WORK/lb-proxy-alt"

wait_answer() { # ip port
    local i
    for i in $(seq 1 50); do
        if dig +time=1 +tries=1 +short -p "$2" "@$1" www.bench.test A 2>/dev/null | grep -q '^127\.1\.1\.1$'; then
            return 0
        fi
        sleep 0.2
    done
    echo "no answer from $1:$2" >&2
    return 1
}

# --- backend --------------------------------------------------------------
if [ "$BACKEND" = dnsmasq ]; then
    dnsmasq --no-resolv --no-hosts --keep-in-foreground --bind-interfaces \
        --conf-file=/dev/null --pid-file= --log-facility=/dev/null \
        --listen-address="$BACKEND_IP" --port="$PORT" \
        --address=/bench.test/127.1.1.1 -c 0 --dns-forward-max=100000 &
else
    if [ -z "${ANSWER_BIN:-}" ]; then
        (cd "$ROOT" && cargo build --release -p lb-examples --example dns_answer >&2)
        ANSWER_BIN="$ROOT/target/release/examples/dns_answer"
    fi
    cp "$ANSWER_BIN" "$WORK/dns_answer"
    "$WORK/dns_answer" "$BACKEND_IP:$PORT" "$BACKEND_THREADS" &
fi
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")

# --- lb-proxy --------------------------------------------------------------
lb_config() { # vip
    cat <<EOF
[node]
name = "node-1"
addresses = ["127.0.153.9"]
[cluster]
service_cidr = "127.96.0.0/16"
[admin]
listen = ""
[[services]]
name = "dns"
cluster_ip = "$1"
[[services.ports]]
name = "dns"
protocol = "UDP"
port = $PORT
[[endpoints]]
name = "dns"
[[endpoints.subsets]]
addresses = [{ ip = "$BACKEND_IP" }]
ports = [{ name = "dns", port = $PORT, protocol = "UDP" }]
EOF
}
# Each lb-proxy's config lives in a directory of its own: lb-proxy watches its
# config file's directory, and dnsperf's output files (with -v, a line per
# query) written beside it would wake lb-proxy's watcher on every query and
# count against its CPU time.
mkdir -p "$WORK/lb" "$WORK/lb-alt"
lb_config "$LB_VIP" >"$WORK/lb/lb.toml"
RUST_LOG=warn "$WORK/lb-proxy" --config "$WORK/lb/lb.toml" >"$WORK/lb.log" 2>&1 &
LB_PID=$!
PIDS+=("$LB_PID")
if [ -n "${LB_BIN_ALT:-}" ]; then
    lb_config "$LB_ALT_VIP" >"$WORK/lb-alt/lb.toml"
    # shellcheck disable=SC2086
    env RUST_LOG=warn $LB_ALT_ENV "$WORK/lb-proxy-alt" --config "$WORK/lb-alt/lb.toml" >"$WORK/lb-alt.log" 2>&1 &
    LB_ALT_PID=$!
    PIDS+=("$LB_ALT_PID")
fi

# --- nginx stream ------------------------------------------------------------
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
load_module $STREAM_MOD;
worker_processes $NGINX_WORKERS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 16384; }
stream {
    server {
        listen $NGINX_IP:$PORT udp reuseport;
        proxy_pass $BACKEND_IP:$PORT;
        proxy_responses 1;
        proxy_timeout 5s;
    }
}
EOF
nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

wait_answer "$BACKEND_IP" "$PORT"
wait_answer "$LB_VIP" "$PORT"
[ -n "${LB_BIN_ALT:-}" ] && wait_answer "$LB_ALT_VIP" "$PORT"
wait_answer "$NGINX_IP" "$PORT"

# --- queries -----------------------------------------------------------------
for i in $(seq 1 100); do echo "host$i.bench.test A"; done >"$WORK/queries.txt"

# CPU ticks (utime+stime) of a process and its children threads/workers.
cpu_ticks() { # pid...
    local total=0 pid t
    for pid in "$@"; do
        t=$(awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
proc_pids() { # target -> pids of the proxy (nginx: master and workers)
    case "$1" in
        lb) echo "$LB_PID" ;;
        lb-alt) echo "$LB_ALT_PID" ;;
        nginx) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;;
        direct) echo "" ;;
    esac
}
server_of() {
    case "$1" in
        lb) echo "$LB_VIP" ;;
        lb-alt) echo "$LB_ALT_VIP" ;;
        nginx) echo "$NGINX_IP" ;;
        direct) echo "$BACKEND_IP" ;;
    esac
}
HZ=$(getconf CLK_TCK)
TARGETS="lb nginx direct"
[ -n "${LB_BIN_ALT:-}" ] && TARGETS="lb lb-alt nginx direct"

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# A counted run (count=1) runs under `perf stat` and gives only the system
# calls and context switches per query; its rate and CPU time are not used:
# tracepoint counting costs the proxy about 0.5 µs per event (3 µs per query at
# -Q 10000, 7 % of its CPU time flat out) and puts every process's system
# calls on the kernel's slow path while it is enabled, which the direct run,
# with no proxy to count, never pays.
COUNTS="$WORK/counts.tsv"
: >"$COUNTS"
run_one() { # round mode target count
    local round=$1 mode=$2 target=$3 count=${4:-0} server pids c0 c1 d0 d1 out qargs p99
    server=$(server_of "$target")
    pids=$(proc_pids "$target")
    qargs=()
    [ "$mode" = fixed ] && qargs=(-Q "$QPS" -v)
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    d0=$(cpu_ticks "$BACKEND_PID")
    out="$WORK/out.$round.$mode.$target"
    local perf_pid=""
    if [ "$count" = 1 ] && [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        perf stat -x, -o "$out.perf" -e "$PERF_EVENTS" \
            -p "$(echo $pids | tr ' ' ',')" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    local s0 s1
    s0=$(head -n 1 /proc/stat)
    # The client's CPU time (user and system seconds) from bash's `time`.
    { TIMEFORMAT='%U %S'; time timeout $((DURATION + 20)) dnsperf -s "$server" -p "$PORT" -d "$WORK/queries.txt" \
        -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 "${qargs[@]}" >"$out" 2>&1; } 2>"$out.time" || true
    s1=$(head -n 1 /proc/stat)
    local ccpu idle
    ccpu=$(awk '{ print $1 + $2 }' "$out.time" 2>/dev/null || echo 0)
    # The machine's idle share over the run (idle + iowait of all CPUs).
    idle=$(printf '%s\n%s\n' "$s0" "$s1" | awk '
        { t = 0; for (i = 2; i <= NF; i++) t += $i; tot[NR] = t; idl[NR] = $5 + $6 }
        END { d = tot[2] - tot[1]; printf "%.3f", (d > 0 ? (idl[2] - idl[1]) / d : 0) }')
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    d1=$(cpu_ticks "$BACKEND_PID")
    local sys=- csw=-
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        sys=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$out.perf")
        csw=$(awk -F, '$3 == "context-switches" { print $1 }' "$out.perf")
        local done_q
        done_q=$(awk '/Queries completed:/ { print $3 }' "$out")
        awk -F, -v round="$round" -v mode="$mode" -v target="$target" -v q="${done_q:-0}" '
            $3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ && q > 0 {
                name = $3; sub(/^syscalls:sys_enter_/, "", name)
                printf "%s\t%s\t%s\t%s\t%.3f\n", round, mode, target, name, $1 / q
            }' "$out.perf" >>"$WORK/breakdown.tsv"
    fi
    p99=-
    if [ "$mode" = fixed ]; then
        p99=$(awk '/^> /{ print $NF }' "$out" | sort -g | awk '{ v[NR] = $1 } END { if (NR) { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.6f", v[i] } else print "-" }')
    fi
    local into=$RESULTS
    [ "$count" = 1 ] && into=$COUNTS
    awk -v round="$round" -v mode="$mode" -v target="$target" -v cpu=$((c1 - c0)) \
        -v dcpu=$((d1 - d0)) -v hz="$HZ" -v p99="$p99" -v sys="${sys:--}" -v csw="${csw:--}" \
        -v ccpu="${ccpu:-0}" -v idle="${idle:-0}" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/ { lost = $3 }
        /Queries per second:/ { qps = $4 }
        /Average Latency/ { avg = $4 }
        END {
            if (done == "") { done = 0; lost = "?"; qps = 0; avg = "-" }
            cpq = (done > 0 && target != "direct") ? sprintf("%.3g", cpu / hz / done) : "-"
            dpq = (done > 0) ? sprintf("%.3g", dcpu / hz / done) : "-"
            spq = (done > 0 && sys ~ /^[0-9]+$/) ? sprintf("%.3f", sys / done) : "-"
            wpq = (done > 0 && csw ~ /^[0-9]+$/) ? sprintf("%.3f", csw / done) : "-"
            kpq = (done > 0) ? sprintf("%.3g", ccpu / done) : "-"
            printf "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\n", round, mode, target, qps, lost, avg, p99, cpq, dpq, cpu / hz, spq, wpq, kpq, idle
        }' "$out" >>"$into"
    tail -n 1 "$into" >&2
}

echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[ -n "${LB_BIN_ALT:-}" ] && echo "# lb-alt: $LB_BIN_ALT ${LB_ALT_ENV:+with $LB_ALT_ENV}" >&2
echo "# backend $BACKEND$([ "$BACKEND" = answer ] && echo " ($BACKEND_THREADS threads)")" >&2
echo "# dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING -t 2 (fixed: -Q $QPS), $ROUNDS rounds, nginx $NGINX_WORKERS workers" >&2
echo "# round mode target qps lost avg_s p99_s proxy_cpu_s/q backend_cpu_s/q proxy_cpu_s syscalls/q ctxsw/q client_cpu_s/q idle" >&2
for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
        # Rotate the order each round so no target always runs first or last.
        read -r -a t <<<"$TARGETS"
        k=$(( (round - 1) % ${#t[@]} ))
        order="${t[*]:k} ${t[*]:0:k}"
        for target in $order; do
            run_one "$round" "$mode" "$target"
        done
    done
done
# Counted runs: COUNT_ROUNDS per proxy and mode, after the measured rounds.
if [ "$COUNT" = 1 ]; then
    echo "# counted runs (perf stat; rates not used)" >&2
    for round in $(seq 1 "$COUNT_ROUNDS"); do
        for mode in $MODES; do
            for target in $TARGETS; do
                [ "$target" = direct ] && continue
                run_one "c$round" "$mode" "$target" 1
            done
        done
    done
fi
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# --- system calls by name (strace -f -c), one fixed-load run per proxy ----------
STRACE_OUT="$WORK/strace.txt"
: >"$STRACE_OUT"
if [ -n "$STRACE" ]; then
    for target in $TARGETS; do
        [ "$target" = direct ] && continue
        sargs=()
        for pid in $(proc_pids "$target"); do sargs+=(-p "$pid"); done
        strace -f -c -o "$WORK/strace.$target" "${sargs[@]}" 2>/dev/null &
        spid=$!
        sleep 1
        sout="$WORK/out.strace.$target"
        timeout $((STRACE_DURATION + 20)) dnsperf -s "$(server_of "$target")" -p "$PORT" \
            -d "$WORK/queries.txt" -l "$STRACE_DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 \
            -Q "$QPS" >"$sout" 2>&1 || true
        kill -INT "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        done_q=$(awk '/Queries completed:/ { print $3 }' "$sout")
        {
            echo "## $target under strace -f -c at -Q $QPS for ${STRACE_DURATION}s: ${done_q:-0} queries completed"
            awk -v q="${done_q:-0}" '
                $NF == "total" { next }
                $1 ~ /^[0-9.]+$/ && NF >= 5 && q > 0 { t += $4; printf "  %-16s %8.3f calls/query\n", $NF, $4 / q }
                END { if (q > 0) printf "  %-16s %8.3f calls/query\n", "total", t / q }
            ' "$WORK/strace.$target"
        } >>"$STRACE_OUT"
    done
fi

# --- table of medians and ratios --------------------------------------------
touch "$WORK/breakdown.tsv"
python3 - "$RESULTS" "$QPS" "$WORK/breakdown.tsv" "$COUNTS" <<'EOF'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
calls = [l.rstrip("\n").split("\t") for l in open(sys.argv[3]) if l.strip()]
counted = [l.rstrip("\n").split("\t") for l in open(sys.argv[4]) if l.strip()]
qps_fixed = sys.argv[2]
def med(vals):
    vals = [float(v) for v in vals if v not in ("-", "?", "")]
    return st.median(vals) if vals else None
def fmt(v, spec):
    return "-" if v is None else format(v, spec)
targets = []
for r in rows:
    if r[2] not in targets:
        targets.append(r[2])
print()
for mode in ["flat", "fixed"]:
    sel = [r for r in rows if r[1] == mode]
    if not sel:
        continue
    title = "flat out" if mode == "flat" else f"fixed offered load -Q {qps_fixed}"
    print(f"## {title} (median of {len({r[0] for r in sel})} rounds)")
    print()
    print("| target | queries/s | lost (max) | avg latency ms | p99 latency ms | proxy CPU µs/query | backend CPU µs/query | client CPU µs/query | idle CPU | proxy syscalls/query | proxy ctx switches/query |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    m = {}
    budget = {}
    for t in targets:
        rs = [r for r in sel if r[2] == t]
        q = med([r[3] for r in rs])
        lost = max((int(r[4]) for r in rs if r[4].isdigit()), default=None)
        avg = med([r[5] for r in rs])
        p99 = med([r[6] for r in rs])
        cpq = med([r[7] for r in rs])
        dpq = med([r[8] for r in rs])
        kpq = med([r[12] for r in rs if len(r) > 12])
        idle = med([r[13] for r in rs if len(r) > 13])
        cs = [r for r in counted if r[1] == mode and r[2] == t]
        spq = med([r[10] for r in cs if len(r) > 10])
        wpq = med([r[11] for r in cs if len(r) > 11])
        m[t] = (q, cpq)
        budget[t] = sum(v for v in (cpq, dpq, kpq) if v) or None
        print(f"| {t} | {fmt(q, ',.0f')} | {lost if lost is not None else '?'} | {fmt(avg and avg * 1e3, '.3f')} | {fmt(p99 and p99 * 1e3, '.3f')} | {fmt(cpq and cpq * 1e6, '.1f')} | {fmt(dpq and dpq * 1e6, '.1f')} | {fmt(kpq and kpq * 1e6, '.1f')} | {fmt(idle and idle * 100, '.0f')} % | {fmt(spq, '.2f')} | {fmt(wpq, '.2f')} |")
    print()
    shown = [f"{t} {budget[t] * 1e6:.1f}" for t in targets if budget.get(t)]
    if shown:
        print("- CPU µs per query of proxy + backend + client together (what the machine's cores are shared by): " + ", ".join(shown))
    for lb in [t for t in targets if t.startswith("lb")]:
        q, c = m[lb]
        parts = []
        if m.get("nginx") and m["nginx"][0]:
            parts.append(f"{lb}/nginx rate {q / m['nginx'][0]:.2f}")
            if c and m["nginx"][1]:
                parts.append(f"{lb}/nginx CPU per query {c / m['nginx'][1]:.2f}")
        if m.get("direct") and m["direct"][0]:
            parts.append(f"{lb}/direct rate {q / m['direct'][0]:.2f}")
        if m.get("nginx") and m.get("direct") and m["nginx"][0] and m["direct"][0]:
            target = min(1.5 * m["nginx"][0], 0.9 * m["direct"][0])
            parts.append(f"target min(1.5x nginx, 0.9x direct) = {target:,.0f} q/s: {'met' if q >= target else 'missed'}")
        print("- " + "; ".join(parts))
        for other in ["direct", "nginx"]:
            per_round = []
            for rnd in sorted({r[0] for r in sel}, key=int):
                a = [float(r[3]) for r in sel if r[0] == rnd and r[2] == lb]
                b = [float(r[3]) for r in sel if r[0] == rnd and r[2] == other]
                if a and b and b[0] > 0:
                    per_round.append(a[0] / b[0])
            if per_round:
                print(f"- {lb}/{other} rate per round: " + ", ".join(f"{v:.2f}" for v in per_round)
                      + f" (median {st.median(per_round):.2f})")
    for t in targets:
        cs = [c for c in calls if c[1] == mode and c[2] == t]
        names = sorted({c[3] for c in cs})
        per = {n: st.median(float(c[4]) for c in cs if c[3] == n) for n in names}
        shown = [f"{n} {v:.2f}" for n, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.005]
        if shown:
            print(f"- {t} system calls per query (perf, median): " + ", ".join(shown))
    print()
print("raw rows (round mode target qps lost avg_s p99_s proxy_cpu_s/q backend_cpu_s/q proxy_cpu_s syscalls/q ctxsw/q client_cpu_s/q idle;")
print("rounds c1, c2, ... are the counted runs, whose rates are not used):")
for r in rows + counted:
    print("  " + " ".join(r))
EOF
if [ -s "$STRACE_OUT" ]; then
    echo
    cat "$STRACE_OUT"
fi
