# Sourced by the benchmark scripts (run.sh, communication.sh, predict.sh): waiting for a quiet
# machine before a measurement, and what it saw. The sourcing script sets WAIT (1: wait, 0: only
# measure).

# Fraction of all CPUs busy over one second (from /proc/stat).
busy_fraction() {
    read -r _ a b c d e f g _ < /proc/stat
    local busy1=$((a + b + c + f + g)) total1=$((a + b + c + d + e + f + g))
    sleep 1
    read -r _ a b c d e f g _ < /proc/stat
    awk -v b=$((a + b + c + f + g - busy1)) -v t=$((a + b + c + d + e + f + g - total1)) 'BEGIN { printf "%.2f", (t > 0 ? b / t : 0) }'
}

# Waits (with WAIT=1, up to 10 minutes) until less than 10% of the CPUs are busy; prints the
# busy fraction it saw last.
wait_quiet() {
    local waited=0 busy
    busy=$(busy_fraction)
    while [ "$WAIT" = 1 ] && awk -v b="$busy" 'BEGIN { exit !(b > 0.10) }' && [ $waited -lt 600 ]; do
        sleep 4; waited=$((waited + 5)); busy=$(busy_fraction)
    done
    echo "$busy"
}
