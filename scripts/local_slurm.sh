#!/usr/bin/env bash
# A one-node SLURM on localhost (controller and compute daemon, munge authentication, no cgroups) from Debian's
# packages, for the tests marked `slurm` (tests/test_slurm.py). Run as root; .ci/run calls it before the tests.
#   bash scripts/local_slurm.sh          install if needed, configure, start; wait until the node is idle
#   bash scripts/local_slurm.sh stop     stop both daemons
# It writes /etc/slurm/slurm.conf (a node of this machine's CPUs and memory, partition `debug`) and logs to
# /var/log/slurm/. Safe to run twice: daemons that answer are left running.
set -euo pipefail
if [ "${1:-}" = stop ]; then
  pkill -x slurmctld || true; pkill -x slurmd || true
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "local_slurm.sh: needs root (it installs packages and starts system daemons)" >&2; exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
if scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then
  echo "local_slurm.sh: SLURM already answers"; exit 0
fi

# munge: one key, the daemon running as its user
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged

# slurm.conf: this machine as the one node, as `slurmd -C` describes it
host=$(hostname -s)
node=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$host/")
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
MpiDefault=none
KillWait=60
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then
    echo "local_slurm.sh: SLURM up ($(sinfo -h -o '%P %D %T %c CPUs'))"; exit 0
  fi
  sleep 1
done
echo "local_slurm.sh: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
