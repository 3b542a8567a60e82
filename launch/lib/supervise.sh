# launch/lib/supervise.sh: sourced by launch/train. Runs one attempt of the job (mpirun or srun)
# and watches it; after a failed attempt decides what was lost and starts the next (run_attempts).
# launch/train places the ranks and builds the command line; the functions here read and set its
# variables (command, job_pid, status, host_names, host_ranks, ...).
#
# Self-healing (--max-restarts N; docs/cluster.md): the ranks print machine-readable lines on stderr
# for this script ("@bert-dist<TAB>event<TAB>key=value...": `lost` from the rank that reports lost
# peers, with the emergency checkpoint of the last completed step; `resumed`, `caught-up` from rank
# 0 of a restarted attempt), which it keeps out of what it shows. After a failed attempt it
# decides what was lost:
#   - a rank the watchdog reported silent (a cut cable, a frozen host): its host is lost, dropped
#     for the next attempt (ranks map to hosts by this script's own placement; under Slurm by the
#     host names in the line);
#   - a rank Open MPI (or srun) reports dead ("process rank R ... on node H exited on signal S"):
#     the process is lost, not the host, whose daemon answered: the host stays;
#   - a daemon Open MPI lost ("Remote daemon: ... on node H"): that host is lost.
# Nothing lost (an error of the job itself, a divergence, a bad file) or a stop asked for
# (SIGTERM/SIGINT here, scancel): no restart. Otherwise it starts the job again on the hosts that
# are left (the ranks scaled with the slots left when -n was given: the same global batch on
# fewer hosts), with --resume and BERT_DIST_RESTART (what rank 0 reports), saying which hosts and
# from which step, until it succeeds, N restarts are spent or fewer than M hosts are left. A host
# dropped in an attempt before the last one comes back when it answers (mpirun: the rsh agent
# runs `true` there; Slurm: srun does), so a mended host rejoins at a later restart. At the end:
# one summary line (attempts, hosts lost, steps computed twice, wall time lost).
#

# --- what the job says on stderr: shown, except the ranks' lines for this script, which are kept ---
# (notice_file: Open MPI's and srun's reports of ranks and daemons that died; events_file: the
# ranks' "@bert-dist" lines.) The copy ignores INT and TERM: a Ctrl-C that killed it would kill
# the job with SIGPIPE at its next line.
temporary_files=()
trap 'rm -f "${temporary_files[@]}"' EXIT
start_stderr_copy() {
    notice_file="$(mktemp "${TMPDIR:-/tmp}/bert-dist-notice.XXXXXX")"
    events_file="$(mktemp "${TMPDIR:-/tmp}/bert-dist-events.XXXXXX")"
    temporary_files+=("$notice_file" "$events_file")
    copy_stderr() {
        trap '' INT TERM
        local line
        while IFS= read -r line || [[ -n "$line" ]]; do
            if [[ "$line" == "@bert-dist"$'\t'* ]]; then printf '%s\n' "$line" >> "$events_file"; continue; fi
            printf '%s\n' "$line" >&2
            case "$line" in
                *"mpirun noticed that process rank"*|*"Remote daemon:"*|"srun: error: "*": task"*) printf '%s\n' "$line" >> "$notice_file" ;;
            esac
        done
    }
    # fd 3: this script's own stderr, for its messages while bash's job notices are silenced below.
    exec 3>&2
    exec 4> >(copy_stderr)
    copier_pid=$!
}

# After the job: the copy ends when nothing holds the job's stderr any more; a process left on a
# host we cannot reach may still hold it (only where that host shares this machine's pipes, as the
# test cluster does): give the copy 2 s to pass on what is left, then end it.
end_stderr_copy() {
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        kill -0 "$copier_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$copier_pid" 2>/dev/null || true
    return 0
}

# --- signals: the first SIGTERM/SIGINT stops the job gracefully, a second aborts it; never a restart ---
signals_seen=0
force_at=""
job_pid=""
on_signal() {
    signals_seen=$((signals_seen + 1))
    [[ -z "$job_pid" || "$job_kind" != mpirun ]] && return 0  # (srun: Slurm and the terminal signal it themselves)
    if [[ $signals_seen -eq 1 ]]; then
        echo "launch/train: $1: asking all ranks to stop after the current step (SIGUSR1); send again to abort" >&3
        kill -USR1 "$job_pid" 2>/dev/null || true
    else
        echo "launch/train: $1 again: aborting the job" >&3
        kill -TERM "$job_pid" 2>/dev/null || true
        force_at=$((SECONDS + 3))  # then SIGKILL, if mpirun still waits for hosts it cannot reach
    fi
}
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT

# --- run mpirun and watch it (into `status`) ---
# mpirun runs in its own session so that Ctrl-C reaches only this script, which turns it into the
# graceful SIGUSR1 (see the top of this file).
run_mpirun() {
    start_stderr_copy
    job_kind=mpirun
    setsid "${command[@]}" 2>&4 3>&- 4>&- &
    job_pid=$!
    exec 4>&-
    force_at=""

    # The ranks mpirun started on this host (its children running the binary).
    local_rank_count() {
        local count=0 program
        while read -r program; do [[ "$program" == "$binary" ]] && count=$((count + 1)); done \
            < <(ps -o args= --ppid "$job_pid" 2>/dev/null | cut -d' ' -f1)
        echo "$count"
    }

    # Wait for mpirun, once a second (so that signals are handled at once and the supervision
    # below runs). mpirun that outlives its local ranks is waiting for daemons it cannot reach (it
    # would wait for ever): end it with SIGKILL, as soon as a host of a rank the ranks reported
    # silent does not answer (asked in the background), else 10 s after them, or 4
    # odls_base_sigkill_timeouts + 4 s when that is longer (after a failure mpirun takes 1-3 s to
    # report, and after a rank died its daemons end the others in two rounds of two such waits
    # each). (A second SIGTERM would make it give up too, but it then crashes in PMIx_Finalize with
    # a stack trace.) The daemons it can reach see it go and end their ranks; the ranks on hosts it
    # cannot reach end through their watchdog.
    set +e
    local seen_ranks=0 ranks_gone_at="" forced=0 local_ranks children grace=10 host unreachable
    (( 4 * sigkill_timeout + 4 > grace )) && grace=$(( 4 * sigkill_timeout + 4 ))
    # (mpirun is our child: once it has exited it is a zombie until `wait`, which kill -0 still sees.)
    mpirun_running() { [[ -r /proc/$job_pid/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$job_pid/status" 2>/dev/null; }
    # (stderr of the loop is /dev/null: bash would otherwise print a "Killed" notice for an mpirun we
    # ended, at whatever command of the loop it notices it; our messages go to fd 3.)
    while mpirun_running; do
        sleep 1 &
        wait $!
        local_ranks="$(local_rank_count)"
        if [[ $local_ranks -gt 0 ]]; then seen_ranks=1; ranks_gone_at=""
        elif [[ $seen_ranks -eq 1 && -z "$ranks_gone_at" ]]; then ranks_gone_at=$SECONDS; fi
        unreachable=""
        if [[ $forced -eq 0 && -n "$ranks_gone_at" ]]; then
            for host in $(silent_hosts); do
                start_probe "$host"
                [[ "$(probe_answer "$host")" == no ]] && unreachable="$host"
            done
        fi
        if [[ $forced -eq 0 && -n "$unreachable" ]]; then
            echo "launch/train: the ranks on this host ended but mpirun waits for $unreachable, which does not answer: ending it" >&3
            force_at=$SECONDS
            forced=1
        elif [[ $forced -eq 0 && -n "$ranks_gone_at" && $((SECONDS - ranks_gone_at)) -ge $grace ]]; then
            echo "launch/train: the ranks on this host ended $((SECONDS - ranks_gone_at)) s ago but mpirun still waits for other hosts (unreachable or frozen?): ending it" >&3
            force_at=$SECONDS
            forced=1
        fi
        if [[ -n "$force_at" && $SECONDS -ge $force_at ]]; then
            # mpirun, its process group (setsid made mpirun its leader) and its children: the ssh
            # clients to the other hosts (each in a process group of its own), which would otherwise
            # wait for their unreachable hosts and keep our output open.
            children="$(ps -o pid= --ppid "$job_pid" | tr '\n' ' ')"
            kill -KILL -- "-$job_pid" || kill -KILL "$job_pid"
            # shellcheck disable=SC2086
            [[ -n "${children// /}" ]] && kill -KILL $children
            force_at=""
        fi
    done 2>/dev/null
    wait "$job_pid" 2>/dev/null
    status=$?
    [[ $forced -eq 1 ]] && status=1  # mpirun was SIGKILLed by us: say failure, not 137
    job_pid=""
    end_stderr_copy
    set -e
    return 0
}

# --- run srun (an attempt of a job with restarts inside Slurm) ---
# In the foreground, in this script's process group: Slurm (scancel, preemption) and a terminal
# signal srun and the ranks themselves, as when srun replaces this script; a signal here only
# means "no restart" (bash runs the trap once srun has ended).
run_srun() {
    start_stderr_copy
    job_kind=srun
    set +e
    if [[ ${#variables[@]} -gt 0 ]]; then
        env "${variables[@]}" "${command[@]}" 2>&4 3>&- 4>&-
    else
        "${command[@]}" 2>&4 3>&- 4>&-
    fi
    status=$?
    exec 4>&-
    set -e
    end_stderr_copy
}

# --- after a failure, one line: what Open MPI said of a rank that died, and where to continue ---
# (A rank's watchdog prints its own line for a rank or host that fell silent.)
report_failure() {
    [[ $status -ne 0 ]] || return 0
    local failure="the job failed (status $status)" notice why="${1:-}"
    notice="$(grep -m 1 'mpirun noticed that process rank' "$notice_file" 2>/dev/null || true)"
    if [[ "$notice" =~ process\ rank\ ([0-9]+)\ with\ PID\ [0-9]+\ on\ node\ ([^ ]+)\ (exited\ on\ signal\ [0-9]+[^.]*) ]]; then
        failure+=": rank ${BASH_REMATCH[1]} on ${BASH_REMATCH[2]} ${BASH_REMATCH[3]}"
    fi
    [[ -n "$why" ]] && failure+="; $why"
    if [[ -n "$output_folder" && -r "$output_folder/latest" ]]; then
        echo "launch/train: $failure; newest complete checkpoint: $output_folder/$(head -n 1 "$output_folder/latest") (continue with --resume)" >&2
    elif [[ -n "$output_folder" && -d "$output_folder" ]]; then
        echo "launch/train: $failure; no complete checkpoint yet" >&2
    else
        echo "launch/train: $failure" >&2
    fi
}

# --- after a failed attempt: what was lost (see the top of this file) ---
# Reads the attempt's notice and events files; sets lost_hosts (to drop), lost_summary (one
# phrase), restartable (1: ranks or hosts were lost), and from the `lost` line last_step,
# last_time and resume_from (the checkpoint the ranks named).
event_field() {  # event_field LINE KEY: the value of KEY=... in a tab-separated event line
    local field
    local -a fields
    IFS=$'\t' read -r -a fields <<< "$1"
    for field in "${fields[@]}"; do [[ "$field" == "$2="* ]] && { printf '%s' "${field#"$2="}"; return 0; }; done
    return 0
}
host_of_rank() {  # the host (cluster.conf's name) of rank $1 in the attempt's placement
    local host first=0
    for ((host = 0; host < ${#host_names[@]}; host++)); do
        if (( $1 < first + host_ranks[host] )); then echo "${host_names[$host]}"; return 0; fi
        first=$((first + host_ranks[host]))
    done
}
silent_hosts() {  # under mpirun: the hosts of the ranks the `lost` lines name, but the first
    [[ "$job_kind" == mpirun ]] || return 0
    local line rank
    while IFS= read -r line; do
        [[ "$line" == "@bert-dist"$'\t'"lost"$'\t'* ]] || continue
        for rank in $(event_field "$line" ranks | tr ',' ' '); do host_of_rank "$rank"; done
    done < "$events_file" | grep -vxF "${first_host:-}" | sort -u
    return 0
}
analyze_failure() {
    lost_hosts=(); restartable=0; lost_summary=""; last_step=""; last_time=""; resume_from=""
    local line rank host silent=() dead=() dead_hosts=() daemon_hosts=() named_hosts=() item
    while IFS= read -r line; do
        [[ "$line" == "@bert-dist"$'\t'"lost"$'\t'* ]] || continue
        IFS=, read -r -a items <<< "$(event_field "$line" ranks)"; silent+=("${items[@]}")
        IFS=, read -r -a items <<< "$(event_field "$line" hosts)"; named_hosts+=("${items[@]}")
        last_step="$(event_field "$line" step)"
        last_time="$(event_field "$line" time)"
        resume_from="$(event_field "$line" checkpoint)"
        [[ "$resume_from" == "-" ]] && resume_from=""
    done < "$events_file"
    while IFS= read -r line; do
        if [[ "$line" =~ process\ rank\ ([0-9]+)\ with\ PID\ [0-9]+\ on\ node\ ([^ ]+)\ exited\ on\ signal ]]; then
            dead+=("${BASH_REMATCH[1]}"); dead_hosts+=("${BASH_REMATCH[2]}")
        elif [[ "$line" =~ Remote\ daemon:.*on\ node\ ([^ ]+) ]]; then
            daemon_hosts+=("${BASH_REMATCH[1]}")
        elif [[ "$line" =~ ^srun:\ error:\ ([^:]+):\ tasks?\ ([0-9,-]+):\ (Killed|Terminated|Segmentation|Bus|Aborted) ]]; then
            dead_hosts+=("${BASH_REMATCH[1]}")
            for item in ${BASH_REMATCH[2]//,/ }; do
                if [[ "$item" == *-* ]]; then for ((rank = ${item%-*}; rank <= ${item#*-}; rank++)); do dead+=("$rank"); done
                else dead+=("$item"); fi
            done
        fi
    done < "$notice_file"
    [[ ${#silent[@]} -gt 0 || ${#dead[@]} -gt 0 || ${#daemon_hosts[@]} -gt 0 ]] && restartable=1
    # Silent ranks that did not die: their hosts are lost. (Under mpirun by this script's placement,
    # under Slurm by the hosts the line names.)
    local silent_alive=()
    for rank in "${silent[@]}"; do [[ " ${dead[*]} " == *" $rank "* ]] || silent_alive+=("$rank"); done
    local candidates=()
    if [[ "$job_kind" == mpirun ]]; then
        for rank in "${silent_alive[@]}"; do candidates+=("$(host_of_rank "$rank")"); done
    elif [[ ${#silent_alive[@]} -gt 0 ]]; then
        for host in "${named_hosts[@]}"; do
            for item in "${all_nodes[@]}"; do [[ "$item" == "$host" || "$item" == "${host%%.*}" ]] && candidates+=("$item"); done
        done
    fi
    candidates+=("${daemon_hosts[@]}" "${dead_hosts[@]}")
    # Each host of a silent or dead rank is asked whether it answers (all at once; run_mpirun may
    # have asked already): one that does lost a process, not itself (a killed rank, or one Open MPI
    # took down with it), and stays. The first host holds the files and this script: never dropped.
    local asked=()
    for host in "${candidates[@]}"; do
        [[ -z "$host" || "$host" == "${first_host:-}" || " ${asked[*]} " == *" $host "* ]] && continue
        asked+=("$host")
        start_probe "$host"
    done
    for host in "${asked[@]}"; do [[ "$(probe_answer "$host" wait)" == yes ]] || lost_hosts+=("$host"); done
    local parts=() stays=()
    [[ ${#lost_hosts[@]} -gt 0 ]] && parts+=("lost $(IFS=,; echo "${lost_hosts[*]}" | sed 's/,/, /g')")
    [[ ${#dead[@]} -gt 0 ]] && parts+=("rank(s) $(IFS=,; echo "${dead[*]}") died")
    for host in "${asked[@]}"; do [[ " ${lost_hosts[*]} " == *" $host "* ]] || stays+=("$host"); done
    if [[ ${#stays[@]} -eq 1 ]]; then parts+=("${stays[0]} still answers")
    elif [[ ${#stays[@]} -gt 1 ]]; then parts+=("$(IFS=,; echo "${stays[*]}" | sed 's/,/, /g') still answer"); fi
    lost_summary="$(IFS=';'; echo "${parts[*]}" | sed 's/;/; /g')"
    return 0
}

# Whether a host answers, asked in the background (start_probe; one question per host and attempt)
# and read with probe_answer HOST [wait]: yes, no, or nothing yet.
declare -A probe_files=()
start_probe() {
    [[ -n "${probe_files[$1]:-}" ]] && return 0
    probe_files[$1]="$(mktemp "${TMPDIR:-/tmp}/bert-dist-probe.XXXXXX")"
    temporary_files+=("${probe_files[$1]}")
    local file="${probe_files[$1]}"
    ( if host_answers "$1"; then echo yes > "$file.tmp"; else echo no > "$file.tmp"; fi; mv "$file.tmp" "$file" ) &
}
probe_answer() {
    local file="${probe_files[$1]:-}"
    [[ -n "$file" ]] || return 0
    local ticks=0
    while [[ "${2:-}" == wait && ! -s "$file" && $ticks -lt 600 ]]; do sleep 0.1; ticks=$((ticks + 1)); done
    cat "$file" 2>/dev/null || true
}

# A host lost in an earlier attempt that answers again comes back (mpirun: the rsh agent Open MPI
# uses runs `true` there within 20 s; Slurm: srun does).
host_answers() {
    if [[ "$job_kind" == srun ]]; then
        timeout -k 5 30 srun -N 1 -n 1 -w "$1" --quiet true >/dev/null 2>&1
        return
    fi
    local agent="${OMPI_MCA_plm_rsh_agent:-}" words index
    read -r -a words <<< "$mpirun_extra"
    for ((index = 0; index + 2 < ${#words[@]}; index++)); do
        [[ "${words[$index]}" == --mca && "${words[$((index + 1))]}" == plm_rsh_agent ]] && agent="${words[$((index + 2))]}"
    done
    # (Open MPI's agent may carry options, "ssh -p 2222", or alternatives, "ssh : rsh": the first.)
    read -r -a words <<< "${agent%%:*}"
    [[ ${#words[@]} -gt 0 ]] || words=(ssh)
    [[ "$(basename "${words[0]}")" == ssh ]] && words+=(-o BatchMode=yes -o ConnectTimeout=10)
    timeout -k 5 20 "${words[@]}" "$1" true </dev/null >/dev/null 2>&1
}

# --- the job: attempts until it succeeds, is stopped, or the restarts are spent ---
run_attempts() {
    declare -gA lost_in=()  # host -> the attempt in which it was lost
    restart_arguments=() all_nodes=() job_kind=mpirun restartable=0
    [[ -n "${SLURM_JOB_ID:-}" && $max_restarts -eq 0 ]] && run_under_srun
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then
        job_kind=srun
        mapfile -t all_nodes < <(slurm_nodes)
        first_host="${all_nodes[0]:-}"
    else
        job_kind=mpirun
        all_names=("${host_names[@]}"); all_slots=("${host_slots[@]}"); all_cores=("${host_cores[@]}")
        first_host="${all_names[0]}"
    fi
    attempt=1
    total_recomputed=0 total_seconds=0 total_hosts_lost=0 all_lost=()
    while true; do
        probe_files=()
        if [[ "$job_kind" == mpirun ]]; then
            # The hosts of this attempt: cluster.conf's, minus the lost ones; the ranks scaled with the
            # slots left when -n was given (the same global batch on fewer hosts).
            host_names=(); host_slots=(); host_cores=()
            slots_all=0 slots_left=0
            for ((index = 0; index < ${#all_names[@]}; index++)); do
                slots_all=$((slots_all + all_slots[index]))
                [[ -n "${lost_in[${all_names[$index]}]:-}" ]] && continue
                host_names+=("${all_names[$index]}"); host_slots+=("${all_slots[$index]}"); host_cores+=("${all_cores[$index]}")
                slots_left=$((slots_left + all_slots[index]))
            done
            ranks="$requested_ranks"
            if [[ -n "$ranks" && $slots_left -lt $slots_all ]]; then ranks=$(( ranks * slots_left / slots_all )); (( ranks < 1 )) && ranks=1; fi
            place_ranks
            mpirun_command
            if [[ $dry_run -eq 1 ]]; then print_mpirun_command; exit 0; fi
            run_mpirun
        else
            srun_command
            run_srun
        fi
        ended_at="$(date +%s.%N)"
        # The ranks' reports of this attempt: when it caught up after a restart.
        while IFS= read -r line; do
            [[ "$line" == "@bert-dist"$'\t'"caught-up"$'\t'* ]] || continue
            recomputed="$(event_field "$line" recomputed)"
            total_recomputed=$(( total_recomputed + ${recomputed:-0} ))
            total_seconds="$(awk -v a="$total_seconds" -v b="$(event_field "$line" seconds)" 'BEGIN { printf "%.1f", a + b }')"
        done < "$events_file"
        if [[ $status -eq 0 || $signals_seen -gt 0 || $max_restarts -eq 0 ]]; then break; fi
        analyze_failure
        restarts_done=$((attempt - 1))
        if [[ $restartable -eq 0 ]]; then break; fi
        if [[ $restarts_done -ge $max_restarts ]]; then
            report_failure "${lost_summary:+$lost_summary; }$max_restarts restart(s) spent (--max-restarts $max_restarts)"
            break
        fi
        for host in "${lost_hosts[@]}"; do lost_in[$host]=$attempt; all_lost+=("$host"); done
        total_hosts_lost=$(( total_hosts_lost + ${#lost_hosts[@]} ))
        # Hosts lost before this attempt that answer again come back.
        back=()
        for host in "${!lost_in[@]}"; do
            if (( lost_in[$host] < attempt )) && host_answers "$host"; then unset "lost_in[$host]"; back+=("$host"); fi
        done
        # The hosts of the next attempt, in cluster.conf's (the allocation's) order.
        left=()
        if [[ "$job_kind" == mpirun ]]; then candidates=("${all_names[@]}"); else candidates=("${all_nodes[@]}"); fi
        for host in "${candidates[@]}"; do [[ -z "${lost_in[$host]:-}" ]] && left+=("$host"); done
        if [[ ${#left[@]} -lt $min_hosts ]]; then
            report_failure "${lost_summary:+$lost_summary; }${#left[@]} host(s) left, fewer than --min-hosts $min_hosts"
            break
        fi
        [[ $signals_seen -gt 0 ]] && break  # (a stop asked for meanwhile)
        from="the newest complete checkpoint"
        if [[ -n "$resume_from" ]]; then from="step ${resume_from##*checkpoint-}"
        elif [[ -n "$output_folder" && -r "$output_folder/latest" ]]; then from="step $(head -n 1 "$output_folder/latest" | sed 's/^checkpoint-//')"; fi
        echo "launch/train: attempt $attempt failed (status $status${lost_summary:+: $lost_summary})${back[*]:+; back: ${back[*]}}: restarting on $(IFS=,; echo "${left[*]}" | sed 's/,/, /g') from $from (restart $attempt of $max_restarts)"
        attempt=$((attempt + 1))
        [[ "$resume_given" == yes ]] || restart_arguments=(--resume)
        lost_list="$(IFS=,; echo "${lost_hosts[*]}")"
        export BERT_DIST_RESTART="attempt=$attempt restarts=$max_restarts failed_at=$ended_at${lost_list:+ lost_hosts=$lost_list}${last_step:+ last_step=$last_step}${last_time:+ last_time=$last_time} earlier_recomputed=$total_recomputed earlier_seconds=$total_seconds earlier_hosts_lost=$(( total_hosts_lost - ${#lost_hosts[@]} ))"
    done
    if [[ $attempt -gt 1 ]]; then
        outcome="done"; [[ $status -ne 0 ]] && outcome="failed"
        lost_text="none"; [[ ${#all_lost[@]} -gt 0 ]] && lost_text="$(printf '%s\n' "${all_lost[@]}" | sort -u | paste -sd, - | sed 's/,/, /g')"
        echo "launch/train: $outcome after $attempt attempts ($((attempt - 1)) restart(s) of $max_restarts): hosts lost: $lost_text; steps computed twice: $total_recomputed; wall time lost: $total_seconds s"
    fi
    [[ $status -ne 0 && ( $restartable -eq 0 || $max_restarts -eq 0 || $signals_seen -gt 0 ) ]] && report_failure
    exit $status
}
