#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, in a folder of its own: try the cluster path of
# a sweep (scripts/sweep_slurm.sbatch) without a cluster.
#
#   scripts/slurm_local.sh up [DIR]       start munged, slurmctld and slurmd; print SLURM_CONF
#   scripts/slurm_local.sh status [DIR]   which daemons run; the node's state and the queue
#   scripts/slurm_local.sh down [DIR]     cancel the cluster's jobs, stop its daemons
#
# DIR (default $SLURM_LOCAL_DIR, else ${TMPDIR:-/tmp}/gradlab-slurm-$USER) holds everything:
# the munge key and socket, slurm.conf, spool, state, logs and the daemons' pid files. Nothing
# outside it is read or written: no /etc/slurm, no system munged (slurm.conf's AuthInfo
# points the SLURM daemons and commands at this cluster's own munged). `up` starts from a
# clean folder (a new key, empty state) so no leftover of an earlier cluster survives; `down`
# stops only the processes whose pid files `up` wrote, and keeps the logs. Ports: free ones,
# chosen at `up`. Needs the Debian/Ubuntu packages slurm-wlm and munge.
set -euo pipefail

usage="usage: $0 up|down|status [DIR]"
command=${1:?$usage}
dir=${2:-${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/gradlab-slurm-$(id -un)}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf
node=localnode
PATH=$PATH:/usr/sbin:/sbin # munged, slurmctld and slurmd live in sbin
export SLURM_CONF=$conf

# the pid in a pid file, if that process is alive and is the daemon named
daemon_pid() {
    local file=$dir/run/$1.pid pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

stop_daemon() {
    local pid
    pid=$(daemon_pid "$1") || return 0
    kill -TERM "$pid"
    for _ in $(seq 100); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

free_ports() { # two free TCP ports on this machine
    python3 -c 'import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))'
}

write_conf() {
    local user cpus memory ports
    user=$(id -un)
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) # nproc obeys OMP_NUM_THREADS
    memory=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
    read -r -a ports < <(free_ports)
    cat >"$conf" <<EOF
# written by scripts/slurm_local.sh: a one-node cluster on $(hostname -s)
ClusterName=gradlab-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/run/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$(hostname -s) CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    local missing=()
    for program in munged slurmctld slurmd sbatch; do
        command -v "$program" >/dev/null || missing+=("$program")
    done
    if ((${#missing[@]})); then
        echo "$0: ${missing[*]} not found: install SLURM (apt-get install slurm-wlm munge)" >&2
        exit 1
    fi
    if daemon_pid slurmctld >/dev/null || daemon_pid slurmd >/dev/null ||
        daemon_pid munged >/dev/null; then
        echo "$0: a cluster already runs in $dir; run '$0 down $dir' first" >&2
        exit 1
    fi
    rm -rf "$dir/munge" "$dir/state" "$dir/spool" "$dir/run" "$dir/log"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/run" "$dir/log"
    chmod 700 "$dir/munge" # the key: this user only
    chmod 755 "$dir" "$dir/run" # munged wants the folders of its socket open to all
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    write_conf
    munged --socket="$dir/run/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    slurmctld -f "$conf"
    slurmd -f "$conf" -N "$node"
    for _ in $(seq 300); do # up to 30 s for the node to register
        if [[ $(sinfo -h -n "$node" -o %t 2>/dev/null) == idle ]]; then
            echo "SLURM cluster up in $dir ($(sinfo -h -n "$node" -o %c) CPUs on node $node)"
            echo "export SLURM_CONF=$conf"
            return 0
        fi
        sleep 0.1
    done
    echo "$0: the node did not come up within 30 s; logs in $dir/log/" >&2
    status >&2 || true
    exit 1
}

down() {
    if daemon_pid slurmctld >/dev/null; then
        scancel --user "$(id -un)" 2>/dev/null || true
        for _ in $(seq 100); do # jobs end before their slurmd goes
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    echo "SLURM cluster in $dir down (logs in $dir/log/)"
}

status() {
    local state=0 pid
    for daemon in munged slurmctld slurmd; do
        if pid=$(daemon_pid "$daemon"); then
            echo "$daemon: running (pid $pid)"
        else
            echo "$daemon: stopped"
            state=1
        fi
    done
    if ((state == 0)); then
        echo "export SLURM_CONF=$conf"
        sinfo
        squeue
    fi
    return $state
}

case $command in
up | down | status) "$command" ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
