#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (Debian's slurm-wlm and munge), for the tests and
# benchmarks that run the pipeline through workflow/profiles/slurm. Run it as root (slurmd starts
# the jobs of any user).
#
#   scripts/slurm_cluster.sh start    # write slurm.conf for this host, start munged, slurmctld, slurmd;
#                                     # returns once sinfo shows the node idle (no-op when it already is)
#   scripts/slurm_cluster.sh stop     # stop the three daemons it started (no-op when none runs)
#   scripts/slurm_cluster.sh status   # sinfo; exit 0 only when the node is up
#
# Everything lives under $LORAREPRO_SLURM_DIR (default /tmp/lorarepro-slurm): slurm.conf, a munge
# key, state, spool, logs. Nothing under /etc is written. slurmd runs configless (it fetches
# slurm.conf from slurmctld) and links its copy at /run/slurm/conf, where every client on this host
# finds it: sinfo, sbatch, and the srun inside each job, whose environment the executor plugin strips
# of SLURM_* variables such as SLURM_CONF. Fetching its config, slurmd authenticates through munge's
# default socket (/run/munge), so munged serves there; one already serving there is used as is.
# $LORAREPRO_SLURM_PARTITION names the one partition (default: debug); it is the cluster's default
# partition, so a profile without slurm_partition lands there too.
set -euo pipefail

DIR=${LORAREPRO_SLURM_DIR:-/tmp/lorarepro-slurm}
PARTITION=${LORAREPRO_SLURM_PARTITION:-debug}
CTLD_PORT=${LORAREPRO_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${LORAREPRO_SLURMD_PORT:-6818}
export SLURM_CONF=$DIR/slurm.conf
MUNGE_SOCKET=/run/munge/munge.socket.2
TIMEOUT=${LORAREPRO_SLURM_TIMEOUT:-60}   # seconds to wait for the node to come up or the daemons to exit

die() { echo "slurm_cluster: $*" >&2; exit 1; }

alive() {  # the daemon whose pid file is $1 is running
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {  # the node's state as sinfo reports it (idle, mixed, alloc, down*, ...), empty if none
    sinfo --noheader --partition "$PARTITION" --format '%t' 2>/dev/null | head -n 1
}

up() {
    case $(node_state) in idle|mix|mixed|alloc|allocated) return 0 ;; *) return 1 ;; esac
}

write_conf() {
    # slurmd -C: this host's real name, CPUs, sockets/cores/threads and memory, as slurmd will register them
    local node
    node=$(slurmd -C | head -n 1)
    [[ $node == NodeName=* ]] || die "slurmd -C gave no node line: $node"
    local name=${node%% *}
    name=${name#NodeName=}
    cat > "$SLURM_CONF" <<EOF
# Written by scripts/slurm_cluster.sh: one node (this host), one partition, no accounting database.
ClusterName=lorarepro
SlurmctldHost=$name(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups (containers rarely delegate them): processes tracked by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# CPUs and memory are consumable: jobs share the node by their --cpus-per-task and --mem.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldParameters=enable_configless
# Without an accounting database sacct has nothing: finished jobs stay visible to squeue
# (snakemake-executor-plugin-slurm's status command) for 10 minutes.
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$name Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && up; then
        echo "slurm_cluster: already running (partition $PARTITION)"
        return 0
    fi
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        || die "slurmctld, slurmd and munged are needed: apt-get install slurm-wlm munge"
    [[ $(id -u) == 0 ]] || die "run as root (slurmd starts jobs as their submitting user)"
    [[ ! -e /etc/slurm/slurm.conf ]] || die "/etc/slurm/slurm.conf exists: this host has a SLURM setup of its own"
    stop >/dev/null  # a half-started cluster (one daemon died) restarts from scratch
    mkdir -p "$DIR"/{munge,state,spool,log}
    chmod 700 "$DIR/munge"
    [[ -s $DIR/munge/munge.key ]] || mungekey --create --keyfile "$DIR/munge/munge.key"
    write_conf
    if ! munge -n --socket "$MUNGE_SOCKET" 2>/dev/null | unmunge --socket "$MUNGE_SOCKET" >/dev/null 2>&1; then
        mkdir -p "${MUNGE_SOCKET%/*}"
        munged --socket "$MUNGE_SOCKET" --key-file "$DIR/munge/munge.key" \
            --pid-file "$DIR/munge/munged.pid" --log-file "$DIR/log/munged.log" --seed-file "$DIR/munge/munged.seed"
    fi
    slurmctld -c -f "$SLURM_CONF"   # -c: a fresh job table, nothing left over from an earlier cluster
    slurmd --conf-server "127.0.0.1:$CTLD_PORT"
    local waited=0
    until up; do
        (( waited++ < TIMEOUT )) || { status || true; die "node not idle after ${TIMEOUT}s (logs: $DIR/log)"; }
        sleep 1
    done
    echo "slurm_cluster: up (partition $PARTITION)"
}

stop() {
    local daemon pidfile pid stopped=0
    for daemon in slurmd slurmctld munge/munged; do
        pidfile=$DIR/$daemon.pid
        alive "$pidfile" || { rm -f "$pidfile"; continue; }
        pid=$(cat "$pidfile")
        kill "$pid"
        local waited=0
        while kill -0 "$pid" 2>/dev/null; do
            (( waited++ < TIMEOUT * 10 )) || die "${daemon##*/} (pid $pid) did not exit"
            sleep 0.1
        done
        rm -f "$pidfile"
        stopped=1
    done
    # slurmd's configless link: left behind, it would point clients at a controller that is gone
    [[ $(readlink /run/slurm/conf 2>/dev/null) != "$DIR"/* ]] || rm -f /run/slurm/conf
    (( stopped )) && echo "slurm_cluster: stopped" || echo "slurm_cluster: not running"
}

status() {
    [[ -s $SLURM_CONF ]] || { echo "slurm_cluster: not configured ($SLURM_CONF)"; return 1; }
    sinfo --partition "$PARTITION" || return 1
    up
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
