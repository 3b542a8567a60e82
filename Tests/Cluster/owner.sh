# Tests/Cluster/owner.sh: who a test cluster or test Slurm belongs to (sourced by cluster.sh and
# slurm.sh). STATE/owner holds "PID START-TIME" of the owning process; a cluster whose owner has
# died (a crashed test run) may be removed by the next run. The start time (field 22 of
# /proc/PID/stat) keeps a reused pid from passing for the owner.

# The start time of process $1, or failure when it does not run.
start_time() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    echo "$stat" | cut -d' ' -f20
}

# Records process $2 as the owner of state folder $1 (fails if it does not run).
record_owner() {
    local time
    time="$(start_time "$2")" || { echo "error: owner $2 is not a running process" >&2; return 1; }
    echo "$2 $time" > "$1/owner"
}

# Whether the owner recorded in state folder $1 still runs.
owner_alive() {
    local pid time
    read -r pid time < "$1/owner" 2>/dev/null || return 1
    [[ "$(start_time "$pid" 2>/dev/null)" == "$time" ]]
}
