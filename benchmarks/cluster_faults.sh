#!/usr/bin/env bash
# What Open MPI (and bert-dist) do when a host of a 2-host job fails, measured on the namespace
# cluster (Tests/Cluster/cluster.sh). Findings: docs/cluster-faults.md.
#
#   benchmarks/cluster_faults.sh SCENARIO [--observe SECONDS] [--mca "OPTIONS"] [--job "ARGS"]
#                                 [--ranks-per-host N] [--launcher mpirun|launch-train] [--chatty]
#
# Scenarios (all on host h2 unless said; rank 0 and mpirun are on h1):
#   cut-host      `ip link set eth1 down` inside h2 (the cable pulled at the host)
#   cut-switch    the switch's port to h2 down (h2's eth1 loses carrier; h2 keeps its routes)
#   stop-host     SIGSTOP to every process of h2 (a frozen host: orted and ranks)
#   stop-rank     SIGSTOP to h2's rank only
#   kill-rank     SIGKILL to h2's rank
#   term-after-cut  cut-host, then SIGTERM to the launcher 3 s later
#   term2-after-cut cut-host, then SIGTERM to the launcher 3 s and again 4 s later
#   cut-host+exit0, stop-host+exit0   the fault, then rank 0 ends on its own 2 s later (SIGKILL):
#                 what happens when a watchdog in rank 0 ends it
#   cut-host+term-orted   cut-host, then SIGTERM to h2's orted 2 s later
#   cut-host+term-rank    cut-host, then SIGKILL to h2's rank 2 s later (a watchdog ending it)
#   stop-host+term-mpirun2  stop-host; 2 s later rank 0 ends (SIGKILL), then mpirun gets SIGTERM
#                 twice, 1 s apart (what launch/train does to a job stuck in its teardown)
#   none          no fault: a healthy job for comparison
# --mca: extra mpirun options (e.g. the oob_tcp keepalive settings); --job: the bert-dist-dev
# arguments (default: `soak --seconds 600`; a bert-dist job with BERT_DIST_BIN); --chatty: h2's rank is wrapped in a shell
# that prints a line every 0.1 s (so Open MPI's daemon connection carries output when the fault
# hits). --launcher launch-train runs the job through launch/train with the cluster's cluster.conf.
#
# Prints a timeline (seconds after the fault) of when each kind of process ended on each host,
# mpirun's exit status and its last lines, and what was still running when observation ended.
# Needs root, a build of bert-dist-dev (BERT_DIST_BIN or .build/release, else .build/debug).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cluster="$repo/Tests/Cluster/cluster.sh"
binary="${BERT_DIST_BIN:-}"
[[ -z "$binary" && -x "$repo/.build/release/bert-dist-dev" ]] && binary="$repo/.build/release/bert-dist-dev"
[[ -z "$binary" ]] && binary="$repo/.build/debug/bert-dist-dev"
[[ -x "$binary" ]] || { echo "error: no bert-dist-dev binary ($binary); swift build first" >&2; exit 2; }

scenario="${1:?usage: cluster_faults.sh SCENARIO [options] (see the top of the file)}"; shift
observe=60; mca=""; job="soak --seconds 600"; ranks_per_host=1; launcher=mpirun; chatty=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --observe) observe="$2"; shift 2 ;;
        --mca) mca="$2"; shift 2 ;;
        --job) job="$2"; shift 2 ;;
        --ranks-per-host) ranks_per_host="$2"; shift 2 ;;
        --launcher) launcher="$2"; shift 2 ;;
        --chatty) chatty=1; shift ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done

name="faults-$$"
"$cluster" clean faults- 2>/dev/null || true
cpus="0 1"
[[ $ranks_per_host -gt 1 ]] && cpus="0-1 0-1"
state="$("$cluster" up "$name" 2 --cpus "$cpus" --owner $$)"
work="$(mktemp -d)"
trap '"$cluster" down "$name"; rm -rf "$work"' EXIT
local_disk="$("$cluster" local "$name")"

read -r -a job_words <<< "$job"
ranks=$((2 * ranks_per_host))
if [[ $launcher == mpirun ]]; then
    for ((host = 1; host <= 2; host++)); do echo "h$host slots=$ranks_per_host"; done > "$state/hostfile"
    command=(mpirun --allow-run-as-root -n "$ranks" --hostfile "$state/hostfile")
    while IFS= read -r option; do command+=("$option"); done < <("$cluster" mpirun-options "$name")
    # shellcheck disable=SC2206
    [[ -n "$mca" ]] && command+=($mca)
    if [[ $chatty -eq 1 ]]; then
        # Rank 1 (h2) prints 10 lines a second besides running the job.
        command+=(sh -c 'if [ "$OMPI_COMM_WORLD_RANK" != 0 ]; then (while true; do echo "tick from $(hostname)"; sleep 0.1; done) & fi; exec "$0" "$@"')
    fi
    command+=("$binary" "${job_words[@]}")
else
    "$cluster" conf "$name" | sed -e "s/slots=1 cores=1/slots=$ranks_per_host cores=$ranks_per_host/" \
        -e "/^mpirun_options/ s|\$| $mca|" > "$state/cluster.conf"
    command=(env BERT_DIST_BIN="$binary" BERT_DIST_SUBCOMMAND="${job_words[0]}" BERT_DIST_CLUSTER_CONF="$state/cluster.conf"
             "$repo/launch/train" -n "$ranks" "${job_words[@]:1}")
fi

echo "# scenario $scenario; $ranks ranks on h1, h2; mpirun options: ${mca:-(none added)}; job: $job${chatty:+ }$([[ $chatty -eq 1 ]] && echo '(chatty rank 1)')"
"$cluster" exec "$name" h1 "${command[@]}" > "$work/out" 2>&1 &
launcher_pid=$!

# The processes of a host, as "pid:kind" with kind rank, orted, mpirun, launcher or other.
processes() {
    local pid cmdline
    for pid in $("$cluster" pids "$name" "$1"); do
        cmdline="$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline")" || continue
        [[ -z "$cmdline" ]] && continue  # a zombie
        grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && continue
        local program="${cmdline%% *}" second
        second="$(echo "$cmdline" | cut -d' ' -f2)"
        case "$program" in
            orted|*/orted) echo "$pid:orted" ;;
            mpirun|*/mpirun) echo "$pid:mpirun" ;;
            "$binary") echo "$pid:rank" ;;
            *) if [[ "$second" == */launch/train ]]; then echo "$pid:launcher"; else echo "$pid:other"; fi ;;
        esac
    done
}
count_kind() { processes "$1" | grep -c ":$2\$" || true; }

# Wait for every rank to run.
for ((tick = 0; tick < 300; tick++)); do
    (( $(count_kind 1 rank) + $(count_kind 2 rank) >= ranks )) && break
    sleep 0.1
done
sleep 3  # inside the loop of collectives
# The kinds of process each host runs before the fault ("h1-mpirun h1-rank h2-orted ...").
kinds_before="$(for host in 1 2; do processes "$host" | sed "s/^[0-9]*:/h$host-/"; done | grep -v -- '-other$' | sort -u | tr '\n' ' ')"
echo "# before the fault: h1: $(processes 1 | tr '\n' ' ') h2: $(processes 2 | tr '\n' ' ')"

now() { date +%s.%N; }
fault_at="$(now)"
case "$scenario" in
    cut-host|term-after-cut|term2-after-cut|cut-host+exit0|cut-host+term-orted|cut-host+term-rank) "$cluster" cut "$name" h2 ;;
    cut-switch) ip -n "$name-switch" link set h2 down ;;
    stop-host|stop-host+exit0|stop-host+term-mpirun2) "$cluster" freeze "$name" h2 ;;
    stop-rank) for entry in $(processes 2); do [[ $entry == *:rank ]] && kill -STOP "${entry%%:*}"; done ;;
    kill-rank) for entry in $(processes 2); do [[ $entry == *:rank ]] && kill -KILL "${entry%%:*}"; done ;;
    none) ;;
    *) echo "error: unknown scenario $scenario" >&2; exit 2 ;;
esac

# The first time each (host, kind) that ran before the fault has no process left.
declare -A gone_at
term_sent=0
while true; do
    elapsed="$(echo "$(now) - $fault_at" | bc | sed 's/^\./0./')"
    if [[ $scenario == *+exit0 && -z "${rank0_killed:-}" ]] && (( $(echo "$elapsed >= 2" | bc) )); then
        for entry in $(processes 1); do [[ $entry == *:rank ]] && kill -KILL "${entry%%:*}"; done
        rank0_killed=1; echo "# SIGKILL to rank 0 at $elapsed s"
    fi
    if [[ $scenario == *+term-orted && -z "${orted_termed:-}" ]] && (( $(echo "$elapsed >= 2" | bc) )); then
        for entry in $(processes 2); do [[ $entry == *:orted ]] && kill -TERM "${entry%%:*}"; done
        orted_termed=1; echo "# SIGTERM to h2's orted at $elapsed s"
    fi
    if [[ $scenario == *+term-rank && -z "${rank_termed:-}" ]] && (( $(echo "$elapsed >= 2" | bc) )); then
        for entry in $(processes 2); do [[ $entry == *:rank ]] && kill -KILL "${entry%%:*}"; done
        rank_termed=1; echo "# SIGKILL to h2's rank at $elapsed s"
    fi
    if [[ $scenario == *+term-mpirun2 && -z "${mpirun_termed:-}" ]] && (( $(echo "$elapsed >= 2" | bc) )); then
        kill -KILL "$(processes 1 | grep :rank | cut -d: -f1)"; sleep 1; kill -TERM "$launcher_pid"; sleep 1; kill -TERM "$launcher_pid"
        mpirun_termed=1; echo "# rank 0 killed at $elapsed s, then SIGTERM to mpirun twice, 1 s apart"
    fi
    if [[ $scenario == term*-after-cut ]]; then
        if [[ $term_sent -eq 0 ]] && (( $(echo "$elapsed >= 3" | bc) )); then kill -TERM "$launcher_pid" 2>/dev/null || true; term_sent=1; echo "# SIGTERM to the launcher at $elapsed s"; fi
        if [[ $scenario == term2-after-cut && $term_sent -eq 1 ]] && (( $(echo "$elapsed >= 4" | bc) )); then kill -TERM "$launcher_pid" 2>/dev/null || true; term_sent=2; echo "# second SIGTERM at $elapsed s"; fi
    fi
    running="$(for host in 1 2; do processes "$host" | sed "s/^[0-9]*:/h$host-/"; done | sort -u | tr '\n' ' ')"
    for key in $kinds_before; do
        [[ -z "${gone_at[$key]:-}" && " $running " != *" $key "* ]] && gone_at[$key]="$elapsed"
    done
    if [[ -z "${launcher_status:-}" ]] && ! kill -0 "$launcher_pid" 2>/dev/null; then
        set +e; wait "$launcher_pid"; launcher_status=$?; set -e
        launcher_exit="$elapsed"
    fi
    [[ -n "${launcher_status:-}" && -z "${running// /}" ]] && break
    (( $(echo "$elapsed >= $observe" | bc) )) && break
    sleep 0.2
done

echo "# seconds after the fault at which the last process of each kind ended (still: running after ${observe} s)"
for host in 1 2; do
    line="h$host:"
    for key in $kinds_before; do
        [[ $key == h$host-* ]] || continue
        value="${gone_at[$key]:-still}"
        [[ $value != still ]] && value="$(printf '%.1f' "$value")"
        line+=" ${key#h$host-} $value,"
    done
    echo "${line%,}"
done
if [[ -n "${launcher_status:-}" ]]; then
    echo "# the launcher ($launcher) exited with status $launcher_status $(printf '%.1f' "$launcher_exit") s after the fault"
else
    echo "# the launcher ($launcher) was still running after $observe s"
fi
echo "# still running at the end: h1: $(processes 1 | tr '\n' ' ') h2: $(processes 2 | tr '\n' ' ')"
# CPU use of what is left, over one second (utime + stime ticks, /proc/PID/stat fields 14, 15).
cpu_ticks() { local stat; stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }; stat="${stat##*) }"; echo "$stat" | awk '{print $12 + $13}'; }
left="$(for host in 1 2; do for entry in $(processes "$host"); do echo "h$host:$entry"; done; done)"
declare -A before_ticks
for entry in $left; do pid="${entry#*:}"; pid="${pid%%:*}"; before_ticks[$pid]="$(cpu_ticks "$pid")"; done
sleep 1
load=""
for entry in $left; do
    pid="${entry#*:}"; pid="${pid%%:*}"
    load+="${entry%%:*} ${entry##*:} $(( ($(cpu_ticks "$pid") - ${before_ticks[$pid]}) * 100 / $(getconf CLK_TCK) ))% "
done
echo "# CPU of what is left (last second): ${load:-nothing left}"
echo "# last lines of the job's output:"
grep -v "tick from" "$work/out" | tail -n 15 | sed 's/^/    /'
