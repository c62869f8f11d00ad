#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying flatbench's SLURM launcher and for the
# `slurm` tests: munged + slurmctld + slurmd on this host, as root, with proctrack/linuxproc,
# task/none, select/cons_tres and no accounting database.
#
#   sudo scripts/slurm_local.sh start     # install slurm-wlm and munge if missing, start, wait until idle
#   eval "$(scripts/slurm_local.sh env)"  # SLURM_CONF for sbatch/sinfo/squeue (and flatbench's launcher)
#   scripts/slurm_local.sh status         # the daemons it started and `sinfo`
#   sudo scripts/slurm_local.sh stop      # cancel its jobs and stop exactly the daemons it started
#
# Everything (slurm.conf, munge key and socket, state, logs, pid files) lives under
# $FLATBENCH_SLURM_DIR (default /tmp/flatbench-slurm); the machine's /etc/slurm and /etc/munge are
# never written. The clients find this cluster through SLURM_CONF, which jobs inherit.
#
# Settings (environment): FLATBENCH_SLURM_DIR, FLATBENCH_SLURM_PORT (slurmctld's port, default
# 6817; slurmd uses the next one), FLATBENCH_SLURM_REQUEUE_S (how long a requeued job waits
# before it may start again: SLURM's cred_expire, 120 s by default on real clusters, 10 s here),
# FLATBENCH_SLURM_NODES (1: one node named after this host; 2 or more: that many nodes n1, n2, ...
# on this host, one slurmd each with its own node name, port, spool, log and pid file, so that
# `srun -N 2 -n 2` runs one task on each, as on two machines). A second cluster beside
# the first needs its own FLATBENCH_SLURM_DIR and FLATBENCH_SLURM_PORT:
#
#   FLATBENCH_SLURM_DIR=/tmp/fb2 FLATBENCH_SLURM_PORT=6840 FLATBENCH_SLURM_NODES=2 scripts/slurm_local.sh start
set -euo pipefail

DIR=${FLATBENCH_SLURM_DIR:-/tmp/flatbench-slurm}
PORT=${FLATBENCH_SLURM_PORT:-6817}
REQUEUE_S=${FLATBENCH_SLURM_REQUEUE_S:-10}
NODES=${FLATBENCH_SLURM_NODES:-1}
CONF=$DIR/etc/slurm.conf
PARTITION=local

die() { echo "slurm_local: $*" >&2; exit 1; }
say() { echo "slurm_local: $*"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as any user, and munged and slurmd run as root here); run it with sudo"
}

need_packages() {
  local missing=()
  for bin in munged mungekey slurmctld slurmd sinfo sbatch scontrol; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install SLURM (slurmctld, slurmd, client commands) and MUNGE by hand"
    say "installing slurm-wlm and munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >"$DIR/log/apt.log" 2>&1 \
      || { apt-get update -q >>"$DIR/log/apt.log" 2>&1 && apt-get install -y -q slurm-wlm munge >>"$DIR/log/apt.log" 2>&1; } \
      || die "apt-get install slurm-wlm munge failed (log: $DIR/log/apt.log)"
  fi
}

# The slurmd daemons' node names: this host's name, or n1..nN on this host.
node_names() {
  if [ "$NODES" -gt 1 ]; then seq -f "n%g" 1 "$NODES"; else hostname -s; fi
}

write_conf() {
  local host cpus mem_mb nodes_line partition_nodes
  host=$(hostname -s)
  cpus=$(nproc)
  # Leave 1 GiB to the system; jobs asking for more memory than this are refused at submission.
  mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  : >"$DIR/etc/plugstack.conf"   # none of the machine's SPANK plugins
  if [ "$NODES" -gt 1 ]; then
    # Each node is a slurmd of this host on its own port; its address is the host's (NodeAddr follows
    # NodeHostname), which is where flatbench's tasks find their master (dist.py: node_address).
    nodes_line=$(for i in $(seq "$NODES"); do
      echo "NodeName=n$i NodeHostname=$host Port=$((PORT + 1 + i)) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"; done)
    partition_nodes="n[1-$NODES]"
  else
    nodes_line="NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
    partition_nodes=$host
  fi
  cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a cluster of $NODES node(s) on $host (regenerated on every start).
ClusterName=flatbench
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again.
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=$REQUEUE_S
StateSaveLocation=$DIR/state/slurmctld
SlurmdSpoolDir=$DIR/state/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
PlugStackConfig=$DIR/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# The scheduler looks at pending jobs every 2 s (60 s and 30 s by default), so that a requeued job
# starts soon after its requeue delay.
SchedulerParameters=sched_interval=2,bf_interval=2
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=300
$nodes_line
PartitionName=$PARTITION Nodes=$partition_nodes Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  need_root
  mkdir -p "$DIR"/{etc,munge,state/slurmctld,run,log}
  for node in $(node_names); do mkdir -p "$DIR/state/slurmd-$node"; done
  need_packages
  if alive "$DIR/run/slurmctld.pid" && all_slurmd_alive && alive "$DIR/run/munged.pid"; then
    say "already running (SLURM_CONF=$CONF)"
    return 0
  fi
  stop_daemons quiet
  write_conf
  chmod 700 "$DIR/munge"
  [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
  chmod 400 "$DIR/munge/munge.key"
  munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" --force \
    || die "munged did not start (log: $DIR/log/munged.log)"
  # -c: a fresh queue on every start (this cluster's jobs are tests and trials).
  slurmctld -c -f "$CONF" || die "slurmctld did not start (log: $DIR/log/slurmctld.log)"
  for node in $(node_names); do
    if [ "$NODES" -gt 1 ]; then
      slurmd -f "$CONF" -N "$node" || die "slurmd -N $node did not start (log: $DIR/log/slurmd-$node.log)"
    else
      slurmd -f "$CONF" || die "slurmd did not start (log: $DIR/log/slurmd-$node.log)"
    fi
  done
  local state=""
  for _ in $(seq 120); do
    state=$(SLURM_CONF=$CONF sinfo -h -o "%t %D" 2>/dev/null | tr '\n' ' ' || true)
    [ "$state" = "idle $NODES " ] && break
    sleep 0.5
  done
  [ "$state" = "idle $NODES " ] || { tail -n 5 "$DIR"/log/slurmctld.log "$DIR"/log/slurmd-*.log >&2 || true;
                                    die "nodes not idle after 60 s (states '${state:-none}'; logs in $DIR/log)"; }
  say "up: partition '$PARTITION', $(node_names | tr '\n' ' ')idle on $(hostname -s), $(nproc) CPUs; use: export SLURM_CONF=$CONF"
}

all_slurmd_alive() {
  local node
  for node in $(node_names); do alive "$DIR/run/slurmd-$node.pid" || return 1; done
}

stop_daemons() {
  local pidf pid stopped=()
  # Every slurmd this directory started, whatever the layout, then the controller and munged.
  for pidf in "$DIR"/run/slurmd*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
    if alive "$pidf"; then
      pid=$(cat "$pidf")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      stopped+=("$(basename "$pidf" .pid)($pid)")
    fi
    rm -f "$pidf"
  done
  [ "${1:-}" = quiet ] || say "stopped: ${stopped[*]:-nothing was running}"
}

stop() {
  need_root
  if alive "$DIR/run/slurmctld.pid"; then
    SLURM_CONF=$CONF scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
    SLURM_CONF=$CONF scancel --quiet --partition="$PARTITION" 2>/dev/null || true
  fi
  stop_daemons
}

status() {
  local name ok=0
  for name in munged slurmctld $(node_names | sed 's/^/slurmd-/'); do
    if alive "$DIR/run/$name.pid"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"; else echo "$name: stopped"; ok=1; fi
  done
  [ $ok = 0 ] && SLURM_CONF=$CONF sinfo
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
