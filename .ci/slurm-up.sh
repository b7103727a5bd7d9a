#!/usr/bin/env bash
# Bring up a one-node SLURM (slurm-wlm + munge) on this machine, for the SLURM tests.
#
# Idempotent: installs packages only if missing, rewrites /etc/slurm/slurm.conf only if it
# changed (restarting the daemons then), starts only daemons that are not running, and
# exits 0 once `sinfo` shows this node usable. Run as root on Debian/Ubuntu without
# systemd (the daemons are started directly).
#
# Environment: SLURM_UP_TIMEOUT (seconds to wait for the node, default 90),
#              SLURM_MEM_MARGIN_MB (memory kept from SLURM, default 1024).
set -euo pipefail

TIMEOUT=${SLURM_UP_TIMEOUT:-90}
MARGIN=${SLURM_MEM_MARGIN_MB:-1024}
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm

die() { echo "slurm-up: error: $*" >&2; exit 1; }
log() { echo "slurm-up: $*"; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons); try: sudo bash $0"

# --- packages (only if missing) ---------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sinfo >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed; check the network or the apt sources"
    apt-get install -y -qq slurm-wlm munge >/dev/null \
        || die "apt-get install slurm-wlm munge failed (see above)"
fi

# --- munge --------------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "user 'munge' missing after installing munge; reinstall the munge package"
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    # a stale socket or pid file from a killed munged makes it refuse to start
    pgrep -x munged >/dev/null || rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || die "munged does not answer; see /var/log/munge/munged.log"
fi

# --- slurm.conf -----------------------------------------------------------------------------
HOST=$(hostname)
CPUS=$(nproc)
TOTAL_MB=$(free -m | awk '/^Mem:/ {print $2}')
REAL_MB=$((TOTAL_MB - MARGIN))
[ "$REAL_MB" -ge 512 ] || die "only ${TOTAL_MB} MB of memory; lower SLURM_MEM_MARGIN_MB (now ${MARGIN})"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGDIR"

NEW=$(mktemp)
trap 'rm -f "$NEW"' EXIT
cat >"$NEW" <<EOF
# One-node SLURM for hdrprep's tests; written by .ci/slurm-up.sh (rewritten when it differs).
ClusterName=hdrprep
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that asks no memory would take the whole node
DefMemPerCPU=$((REAL_MB / CPUS))
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${REAL_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF

daemon_pid() {  # pid of a running daemon from its pid file, or nothing
    local f=$1 name=$2 pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$name" ] && echo "$pid"
    return 0
}

stop_daemon() {
    local pid
    pid=$(daemon_pid "$1" "$2")
    [ -n "$pid" ] || return 0
    log "stopping $2 (pid $pid)"
    kill "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    die "$2 (pid $pid) did not stop"
}

if ! cmp -s "$NEW" "$CONF"; then
    log "writing $CONF (node ${HOST}: ${CPUS} CPUs, ${REAL_MB} MB)"
    stop_daemon /run/slurmd.pid slurmd
    stop_daemon /run/slurmctld.pid slurmctld
    install -m 0644 "$NEW" "$CONF"
fi

# --- daemons ------------------------------------------------------------------------------
if [ -z "$(daemon_pid /run/slurmctld.pid slurmctld)" ]; then
    log "starting slurmctld"
    slurmctld || die "slurmctld failed to start; see ${LOGDIR}/slurmctld.log"
fi
if [ -z "$(daemon_pid /run/slurmd.pid slurmd)" ]; then
    log "starting slurmd"
    slurmd || die "slurmd failed to start; see ${LOGDIR}/slurmd.log"
fi

# --- wait for the node ----------------------------------------------------------------------
state=""
for _ in $(seq $((TIMEOUT * 2))); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
    case "$state" in
        idle | mix | alloc | comp) log "node ${HOST} is ${state}; SLURM is up"; exit 0 ;;
        down* | drain* | drng*)
            # a node left down by an earlier run (kept in StateSaveLocation) can be resumed
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
die "node ${HOST} not usable after ${TIMEOUT} s (sinfo state: '${state:-no answer}', reason: \
$(sinfo -h -n "$HOST" -o %E 2>/dev/null || echo '?')); see ${LOGDIR}/slurmctld.log and ${LOGDIR}/slurmd.log"
