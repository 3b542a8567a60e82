#!/usr/bin/env bash
# Tests/Cluster/cluster.sh: a cluster of N "hosts" on this machine, for multi-node tests and
# benchmarks (needs root and iproute2's `ip`).
#
# Each host is a network namespace with its own interface eth1 (10.77.0.K/24, K = 1 ... N) joined to
# the others by a bridge that lives in a namespace of its own (NAME-switch), so nothing is added to
# the machine's own network namespace. Every command a host runs gets, in addition:
#   - a private mount namespace in which the host's "local disk" ($state/disks/hK) is mounted at
#     the same path on every host, $state/local (print it with `cluster.sh local NAME`): files one
#     host writes there are invisible to the others; everything else (the binary, /tmp) is shared;
#   - its own hostname (hK), so that Open MPI (and anything naming hosts) sees N different machines;
#   - its own cores (taskset): host K gets core (K-1) mod (cores of this machine) unless --cpus says
#     otherwise. Open MPI binds a host's first rank to that host's first core; without this every
#     "host" would put its rank 0 on core 0.
#
#   cluster.sh setup              install iproute2 (ip, tc) if missing (apt; launch/test runs this)
#   cluster.sh up NAME HOSTS [--cpus "LIST1 LIST2 ..."] [--owner PID]
#         create the cluster (fails if NAME exists); prints the state folder. --owner: the process
#         whose life the cluster belongs to (default: the caller); `clean` removes clusters whose
#         owner has died. NAME: letters, digits and '-', at most 40 characters.
#   cluster.sh down NAME          kill everything running on its hosts, delete it (idempotent)
#   cluster.sh clean PREFIX       `down` every cluster whose name starts with PREFIX and whose owner
#                                 is gone (left behind by a crashed run)
#   cluster.sh exec NAME HOST COMMAND [ARG...]   run a command on host hK (K or hK)
#   cluster.sh rsh NAME HOST COMMAND-WORDS...    what mpirun's rsh agent runs, like `ssh HOST words`
#                                 (the words are joined and run by sh on HOST, in a session of its
#                                 own; this process waits on the calling host); $state/rsh is this,
#                                 bound to NAME, for `--mca plm_rsh_agent $state/rsh`
#   cluster.sh conf NAME [HOSTS]  print a cluster.conf for launch/train (first HOSTS hosts)
#   cluster.sh hostfile NAME [HOSTS]   print an Open MPI hostfile (one slot per core of each host)
#   cluster.sh mpirun-options NAME     print the options a plain mpirun needs here (one per line;
#                                 after any --bind-to of your own: it ends with --bind-to none)
#   cluster.sh pids NAME HOST     pids of every process running on the host
#   cluster.sh cut NAME HOST | mend NAME HOST       the host's cable: eth1 down / up
#   cluster.sh freeze NAME HOST | thaw NAME HOST    SIGSTOP / SIGCONT every process of the host
#                                 (a frozen or cut-off host also refuses `rsh`, as ssh would time out)
#   cluster.sh limit NAME RATE [BURST [LATENCY]]    token-bucket limit (tc tbf) on every link in
#                                 both directions, e.g. `limit c1 1gbit 256kb 50ms`; RATE off: none
#   cluster.sh local NAME         the local-disk path (the same on every host)
#   cluster.sh disk NAME HOST     where the host's local disk lives, seen from outside the cluster
#   cluster.sh list               the clusters that exist, with their owner
#
# State: /tmp/bert-dist-clusters/NAME (hosts, owner, rsh, disks/, local/, tmp/), created before any
# namespace so that `clean` never mistakes a cluster being built for a dead one. Open MPI keeps
# its session folders (ompi.hK.UID: PMIx's shared-memory stores, ~10 MB a job) in tmp/ instead of
# /tmp: a job that a fault test kills never removes its own, and `down` removes tmp/.
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
root_state="${BERT_DIST_CLUSTER_STATE:-/tmp/bert-dist-clusters}"
subnet="10.77.0"
# shellcheck source=owner.sh
source "$(dirname "$self")/owner.sh"

fail() { echo "cluster.sh: error: $*" >&2; exit 2; }

state_of() { echo "$root_state/$1"; }

check_name() {
    [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9-]{0,39}$ ]] || fail "cluster name '$1': use letters, digits and '-', at most 40 characters"
}

# "3" or "h3" -> 3, checked against the cluster's host count.
host_index() {
    local name="$1" host="$2" index count
    index="${host#h}"
    [[ "$index" =~ ^[1-9][0-9]*$ ]] || fail "host '$host': expected K or hK"
    count="$(host_count "$name")"
    (( index <= count )) || fail "cluster $name has $count hosts, no host h$index"
    echo "$index"
}

host_count() {
    local state
    state="$(state_of "$1")"
    [[ -r "$state/hosts" ]] || fail "no cluster named $1 (no $state/hosts)"
    wc -l < "$state/hosts"
}

# Field 2 (address) or 3 (cpu list) of host K's line in $state/hosts ("hK 10.77.0.K CPUS").
host_field() {
    sed -n "$2p" "$(state_of "$1")/hosts" | cut -d' ' -f"$3"
}

namespaces_of() {
    ip netns list 2>/dev/null | cut -d' ' -f1 | grep -E "^$1-(switch|h[0-9]+)\$" || true
}

command_up() {
    local name="$1" count="$2"; shift 2
    check_name "$name"
    [[ "$count" =~ ^[1-9][0-9]*$ ]] && (( count <= 200 )) || fail "host count '$count': expected 1 ... 200"
    local cpus="" owner="$PPID"
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --cpus) cpus="$2"; shift 2 ;;
            --owner) owner="$2"; shift 2 ;;
            *) fail "up: unknown option '$1'" ;;
        esac
    done
    command -v ip >/dev/null || fail "iproute2's ip is not installed"
    [[ "$(id -u)" -eq 0 ]] || fail "creating network namespaces needs root"
    local state
    state="$(state_of "$name")"
    [[ -e "$state" || -n "$(namespaces_of "$name")" ]] && fail "cluster $name exists already (cluster.sh down $name)"
    mkdir -p "$state/disks" "$state/local" "$state/tmp"
    record_owner "$state" "$owner" || exit 2
    local cores
    cores="$(nproc)"
    read -r -a cpu_lists <<< "$cpus"
    : > "$state/hosts"
    for ((index = 1; index <= count; index++)); do
        local list="${cpu_lists[$((index - 1))]:-$(( (index - 1) % cores ))}"
        echo "h$index $subnet.$index $list" >> "$state/hosts"
        mkdir -p "$state/disks/h$index"
    done
    printf '#!/bin/sh\n# rsh agent of cluster %s (written by cluster.sh up)\nexec %q rsh %q "$@"\n' "$name" "$self" "$name" > "$state/rsh"
    chmod +x "$state/rsh"
    # From here on a failure leaves namespaces behind: take them down again.
    trap 'command_down "$name" >/dev/null 2>&1 || true' ERR
    ip netns add "$name-switch"
    ip -n "$name-switch" link add br0 type bridge
    ip -n "$name-switch" link set br0 up
    ip -n "$name-switch" link set lo up
    for ((index = 1; index <= count; index++)); do
        local namespace="$name-h$index"
        ip netns add "$namespace"
        # The host end is called eth1 inside the host; the switch end hK inside the switch.
        ip link add eth1 netns "$namespace" type veth peer name "h$index" netns "$name-switch"
        ip -n "$name-switch" link set "h$index" master br0 up
        ip -n "$namespace" addr add "$subnet.$index/24" dev eth1
        ip -n "$namespace" link set eth1 up
        ip -n "$namespace" link set lo up
    done
    trap - ERR
    echo "$state"
}

command_down() {
    local name="$1" state
    check_name "$name"
    state="$(state_of "$name")"
    local namespaces
    namespaces="$(namespaces_of "$name")"
    # Kill first (SIGKILL also ends stopped processes): a namespace outlives `ip netns del` while
    # processes are in it.
    for round in 1 2 3 4 5 6 7 8 9 10; do
        local pids=""
        for namespace in $namespaces; do pids+=" $(ip netns pids "$namespace" 2>/dev/null | tr '\n' ' ')"; done
        [[ -z "${pids// /}" ]] && break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    for namespace in $namespaces; do ip netns del "$namespace" 2>/dev/null || true; done
    rm -rf "$state"
}

command_clean() {
    local prefix="$1" names
    [[ "$prefix" =~ ^[A-Za-z0-9-]+$ ]] || fail "prefix '$prefix': use letters, digits and '-'"
    names="$( { ip netns list 2>/dev/null | cut -d' ' -f1 | sed -nE 's/-(switch|h[0-9]+)$//p'
               ls "$root_state" 2>/dev/null; } | grep "^$prefix" | sort -u || true)"
    for name in $names; do
        [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9-]{0,39}$ ]] || continue
        if ! owner_alive "$(state_of "$name")"; then
            echo "cluster.sh: removing cluster $name (its owner is gone)" >&2
            command_down "$name"
        fi
    done
}

# Runs as the first program inside the host's namespaces (see command_exec).
command_enter() {
    local name="$1" index="$2"; shift 2
    local state
    state="$(state_of "$name")"
    hostname "h$index"
    mount --bind "$state/disks/h$index" "$state/local"
    export OMPI_MCA_orte_tmpdir_base="$state/tmp"
    exec taskset -c "$(host_field "$name" "$index" 3)" "$@"
}

command_exec() {
    local name="$1" index
    index="$(host_index "$name" "$2")"; shift 2
    [[ $# -gt 0 ]] || fail "exec: no command"
    # ip netns exec and unshare both exec (no extra process): the caller's child is the command.
    exec ip netns exec "$name-h$index" unshare --mount --uts --propagation private -- \
        "$self" _enter "$name" "$index" "$@"
}

command_conf() {
    local name="$1" count="${2:-}" state total
    state="$(state_of "$name")"
    total="$(host_count "$name")"
    count="${count:-$total}"
    echo "# cluster.conf of the test cluster $name (cluster.sh conf)"
    for ((index = 1; index <= count; index++)); do
        local cores
        cores="$(cpu_count "$(host_field "$name" "$index" 3)")"
        echo "host h$index slots=$cores cores=$cores"
    done
    echo "network_interface = eth1"
    # The interface comes from network_interface (Open MPI refuses a parameter given twice).
    # --bind-to none (after launch/train's own binding, so it wins): each host is pinned to its cores
    # by taskset, and Open MPI would otherwise bind every host's ranks by the head's topology, which
    # is not theirs (host 2's rank 0 ends up on core 0, the head's).
    echo "mpirun_options = --mca plm_rsh_agent $state/rsh --mca btl tcp,self --bind-to none"
}

command_hostfile() {
    local name="$1" count="${2:-}" total
    total="$(host_count "$name")"
    count="${count:-$total}"
    for ((index = 1; index <= count; index++)); do
        echo "h$index slots=$(cpu_count "$(host_field "$name" "$index" 3)")"
    done
}

# The number of cores in a taskset list such as 0,2-3.
cpu_count() {
    local total=0 part
    for part in ${1//,/ }; do
        if [[ "$part" == *-* ]]; then total=$((total + ${part#*-} - ${part%-*} + 1)); else total=$((total + 1)); fi
    done
    echo "$total"
}

# For a plain mpirun (see command_conf for --bind-to none).
command_mpirun_options() {
    local state
    state="$(state_of "$1")"
    host_count "$1" >/dev/null
    printf '%s\n' --mca plm_rsh_agent "$state/rsh" --mca btl tcp,self \
        --mca btl_tcp_if_include eth1 --mca oob_tcp_if_include eth1 --bind-to none
}

command_limit() {
    local name="$1" rate="$2" burst="${3:-256kb}" latency="${4:-50ms}" count
    count="$(host_count "$name")"
    for ((index = 1; index <= count; index++)); do
        # Egress of the host (host -> switch) and of the switch port (switch -> host).
        for target in "$name-h$index eth1" "$name-switch h$index"; do
            read -r namespace device <<< "$target"
            tc -n "$namespace" qdisc del dev "$device" root 2>/dev/null || true
            [[ "$rate" == off ]] || tc -n "$namespace" qdisc add dev "$device" root tbf rate "$rate" burst "$burst" latency "$latency"
        done
    done
}

command_signal_host() {
    local name="$1" index signal="$3" pids
    index="$(host_index "$name" "$2")"
    pids="$(ip netns pids "$name-h$index" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    [[ -n "${pids// /}" ]] && kill -"$signal" $pids
    return 0
}

[[ $# -ge 1 ]] || fail "usage: cluster.sh setup|up|down|clean|exec|rsh|conf|hostfile|mpirun-options|pids|cut|mend|freeze|thaw|limit|local|disk|list ... (see the top of this file)"
action="$1"; shift
need() { [[ $# -ge $1 ]] || fail "$action: expected $2"; }
case "$action" in
    setup)
        if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
            sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
            echo "cluster.sh: installing iproute2"
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
        fi ;;
    up) need 2 "NAME HOSTS" "$@"; command_up "$@" ;;
    down) need 1 "NAME" "$@"; command_down "$1" ;;
    clean) need 1 "PREFIX" "$@"; command_clean "$1" ;;
    exec) need 3 "NAME HOST COMMAND..." "$@"; command_exec "$@" ;;
    rsh) need 3 "NAME HOST COMMAND-WORDS..." "$@"
        name="$1"; host="$2"; shift 2
        # Like ssh over the cluster's network: a host whose cable is cut, or that is frozen, does not
        # answer (ssh gives up after its connect timeout, status 255); launch/train's probe of a lost
        # host relies on that.
        index="$(host_index "$name" "$host")"
        if ! ip -n "$name-h$index" link show eth1 2>/dev/null | grep -q "state UP" || [[ -e "$(state_of "$name")/frozen-h$index" ]]; then
            sleep 2
            echo "ssh: connect to host h$index port 22: Connection timed out" >&2
            exit 255
        fi
        # Like ssh: this process stays on the calling host and waits for the remote command, which
        # runs on HOST in a session of its own (the words joined by spaces, run by sh). Killing this
        # process, or its process group, leaves the remote command running, as killing an ssh
        # client over a cut cable would; the remote command's exit status becomes ours.
        "$self" exec "$name" "$host" setsid sh -c "$*" &
        wait $! ;;
    _enter) command_enter "$@" ;;
    conf) need 1 "NAME [HOSTS]" "$@"; command_conf "$@" ;;
    hostfile) need 1 "NAME [HOSTS]" "$@"; command_hostfile "$@" ;;
    mpirun-options) need 1 "NAME" "$@"; command_mpirun_options "$1" ;;
    pids) need 2 "NAME HOST" "$@"; ip netns pids "$1-h$(host_index "$1" "$2")" ;;
    cut) need 2 "NAME HOST" "$@"; ip -n "$1-h$(host_index "$1" "$2")" link set eth1 down ;;
    mend) need 2 "NAME HOST" "$@"; ip -n "$1-h$(host_index "$1" "$2")" link set eth1 up ;;
    freeze) need 2 "NAME HOST" "$@"; touch "$(state_of "$1")/frozen-h$(host_index "$1" "$2")"; command_signal_host "$1" "$2" STOP ;;
    thaw) need 2 "NAME HOST" "$@"; rm -f "$(state_of "$1")/frozen-h$(host_index "$1" "$2")"; command_signal_host "$1" "$2" CONT ;;
    limit) need 2 "NAME RATE [BURST [LATENCY]]" "$@"; command_limit "$@" ;;
    local) need 1 "NAME" "$@"; host_count "$1" >/dev/null; echo "$(state_of "$1")/local" ;;
    disk) need 2 "NAME HOST" "$@"; echo "$(state_of "$1")/disks/h$(host_index "$1" "$2")" ;;
    list)
        for state in "$root_state"/*/; do
            [[ -r "$state/owner" ]] || continue
            name="$(basename "$state")"
            alive="owner gone"; owner_alive "$state" && alive="owner alive"
            echo "$name $(host_count "$name") hosts, owner $(cut -d' ' -f1 "$state/owner") ($alive)"
        done ;;
    *) fail "unknown action '$action' (see the top of this file)" ;;
esac
