#!/usr/bin/env bash
# Cluster DNS benchmark (issue 6): dnsperf against lb-proxy's DNS responder
# (`[dns] listen`) beside the same query load against dnsmasq answering the
# same names from its configuration, in interleaved rounds.
#
#   benches/dns/responder_compare.sh            # 3 rounds, -l 10, flat out and -Q 10000
#   ROUNDS=5 QPS=15000 LB_BIN=/path/to/lb-proxy benches/dns/responder_compare.sh
#
# Queries: A `<svc>.<ns>.svc.cluster.local` and SRV `_<port>._tcp.<svc>.<ns>.svc.cluster.local`
# for 8 ClusterIP services (16 names, each asked as often). dnsmasq answers the
# same names with --address and --srv-host. Needs (Debian): dnsperf dnsmasq-base dnsutils.
# Loopback only (127.0.154.0/24, cluster IPs in 127.96.154.0/24); servers are
# killed at exit; the whole run is bounded (timeout). Not run by .ci/run.
#
# Reported per server and mode (median over rounds): answers/s (completed
# queries/s), lost, average latency, response size, NOERROR share, and the
# server's CPU seconds per answer (utime+stime delta from /proc/PID/stat).
set -euo pipefail

WATCHDOG=${WATCHDOG:-1200}
if [ -z "${LB_BENCH_BOUNDED:-}" ]; then
    LB_BENCH_BOUNDED=1 exec timeout "$WATCHDOG" "$0" "$@"
fi

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
QPS=${QPS:-10000}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
MODES=${MODES:-"flat fixed"}
PORT=${PORT:-5300}
LB_IP=127.0.154.1
DNSMASQ_IP=127.0.154.2
SERVICES=${SERVICES:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

for tool in dnsperf dnsmasq dig; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf dnsmasq-base dnsutils)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/lb-dns-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${LB_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -p lb-proxy >&2)
    LB_BIN="$ROOT/target/release/lb-proxy"
fi
cp "$LB_BIN" "$WORK/lb-proxy"

# --- the same names for both servers ----------------------------------------
{
    cat <<EOF
[node]
name = "node-1"
addresses = ["127.0.154.9"]
[cluster]
service_cidr = "127.96.0.0/16"
[admin]
listen = ""
[dns]
listen = "$LB_IP:$PORT"
ttl = 30
EOF
    for i in $(seq 1 "$SERVICES"); do
        cat <<EOF
[[services]]
name = "svc$i"
cluster_ip = "127.96.154.$((10 + i))"
[[services.ports]]
name = "http"
port = 80
EOF
    done
} >"$WORK/lb.toml"

DNSMASQ_ARGS=()
: >"$WORK/queries.txt"
for i in $(seq 1 "$SERVICES"); do
    name="svc$i.default.svc.cluster.local"
    DNSMASQ_ARGS+=("--address=/$name/127.96.154.$((10 + i))" "--srv-host=_http._tcp.$name,$name,80,0,100")
    echo "$name A" >>"$WORK/queries.txt"
    echo "_http._tcp.$name SRV" >>"$WORK/queries.txt"
done

RUST_LOG=warn "$WORK/lb-proxy" --config "$WORK/lb.toml" >"$WORK/lb.log" 2>&1 &
LB_PID=$!
PIDS+=("$LB_PID")
dnsmasq --no-resolv --no-hosts --keep-in-foreground --bind-interfaces \
    --conf-file=/dev/null --pid-file= --log-facility=/dev/null \
    --listen-address="$DNSMASQ_IP" --port="$PORT" -c 0 --dns-forward-max=100000 \
    "${DNSMASQ_ARGS[@]}" &
DNSMASQ_PID=$!
PIDS+=("$DNSMASQ_PID")

wait_answer() { # ip
    local i
    for i in $(seq 1 50); do
        if dig +time=1 +tries=1 +short -p "$PORT" "@$1" svc1.default.svc.cluster.local A 2>/dev/null | grep -q '^127\.96\.154\.11$'; then
            return 0
        fi
        sleep 0.2
    done
    echo "no answer from $1:$PORT" >&2
    [ -f "$WORK/lb.log" ] && tail -5 "$WORK/lb.log" >&2
    return 1
}
wait_answer "$LB_IP"
wait_answer "$DNSMASQ_IP"
echo "# sample answers (SRV):" >&2
for ip in "$LB_IP" "$DNSMASQ_IP"; do
    echo "#   $ip: $(dig +time=1 +tries=1 +norec -p "$PORT" "@$ip" _http._tcp.svc1.default.svc.cluster.local SRV +noall +answer +additional | tr -s ' \t' ' ' | tr '\n' '|')" >&2
done

cpu_ticks() { # pid
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat" 2>/dev/null || echo 0
}
HZ=$(getconf CLK_TCK)
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
run_one() { # round mode target
    local round=$1 mode=$2 target=$3 server pid c0 c1 out qargs
    case "$target" in
        lb-proxy) server=$LB_IP pid=$LB_PID ;;
        dnsmasq) server=$DNSMASQ_IP pid=$DNSMASQ_PID ;;
    esac
    qargs=()
    [ "$mode" = fixed ] && qargs=(-Q "$QPS")
    out="$WORK/out.$round.$mode.$target"
    c0=$(cpu_ticks "$pid")
    timeout $((DURATION + 20)) dnsperf -s "$server" -p "$PORT" -d "$WORK/queries.txt" \
        -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 "${qargs[@]}" >"$out" 2>&1 || true
    c1=$(cpu_ticks "$pid")
    awk -v round="$round" -v mode="$mode" -v target="$target" -v cpu=$((c1 - c0)) -v hz="$HZ" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/ { lost = $3 }
        /Queries per second:/ { qps = $4 }
        /Average Latency/ { avg = $4 }
        /Average packet size/ { resp = $NF }
        /Response codes:/ { noerr = 0; for (i = 1; i < NF; i++) if ($i == "NOERROR") noerr = $(i + 1) }
        END {
            if (done == "") { done = 0; lost = "?"; qps = 0; avg = "-"; resp = "-" }
            cpq = done > 0 ? sprintf("%.3g", cpu / hz / done) : "-"
            printf "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\n", round, mode, target, qps, lost, avg, resp, (done > 0 ? sprintf("%.3f", noerr / done) : "-"), cpq, cpu / hz
        }' "$out" >>"$RESULTS"
    tail -n 1 "$RESULTS" >&2
}

echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "# dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING -t 2 (fixed: -Q $QPS), $ROUNDS rounds, $(wc -l <"$WORK/queries.txt") query names" >&2
echo "# round mode server qps lost avg_s resp_bytes noerror_share cpu_s/q cpu_s" >&2
for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
        if [ $((round % 2)) -eq 1 ]; then order="lb-proxy dnsmasq"; else order="dnsmasq lb-proxy"; fi
        for target in $order; do
            run_one "$round" "$mode" "$target"
        done
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$RESULTS" "$QPS" <<'EOF'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def med(vals):
    vals = [float(v) for v in vals if v not in ("-", "?", "")]
    return st.median(vals) if vals else None
def fmt(v, spec):
    return "-" if v is None else format(v, spec)
print()
for mode in ["flat", "fixed"]:
    sel = [r for r in rows if r[1] == mode]
    if not sel:
        continue
    title = "flat out" if mode == "flat" else f"fixed offered load -Q {sys.argv[2]}"
    print(f"## {title} (median of {len({r[0] for r in sel})} rounds)")
    print()
    print("| server | answers/s | lost (max) | avg latency ms | response bytes | NOERROR share | CPU µs/answer |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    m = {}
    for t in ["lb-proxy", "dnsmasq"]:
        rs = [r for r in sel if r[2] == t]
        q, avg, cpq = med([r[3] for r in rs]), med([r[5] for r in rs]), med([r[8] for r in rs])
        lost = max((int(r[4]) for r in rs if r[4].isdigit()), default=None)
        m[t] = (q, cpq)
        print(f"| {t} | {fmt(q, ',.0f')} | {lost if lost is not None else '?'} | {fmt(avg and avg * 1e3, '.3f')} | {rs[0][6] if rs else '-'} | {rs[0][7] if rs else '-'} | {fmt(cpq and cpq * 1e6, '.1f')} |")
    print()
    (q1, c1), (q2, c2) = m["lb-proxy"], m["dnsmasq"]
    if q1 and q2:
        line = f"- lb-proxy/dnsmasq answers/s {q1 / q2:.2f}"
        if c1 and c2:
            line += f"; CPU per answer {c1 / c2:.2f}"
        print(line)
    print()
print("raw rows (round mode server qps lost avg_s resp_bytes noerror_share cpu_s/q cpu_s):")
for r in rows:
    print("  " + " ".join(r))
EOF
