#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this host (Debian 12, root, no systemd) for
# tests/test_slurm.py: munge, slurmctld and slurmd, started by hand (PID files in /run),
# one node with every CPU, all memory but 1 GiB, partition "debug", no accounting.
#   SLURM_FAKE_GPUS=N  advertise N fake GPUs of model "fake" (gres backed by empty files), so
#                      jobs that ask for --gpus schedule on a CPU-only machine (no CUDA
#                      device is made).
# Stop it with .ci/slurm-down.sh. Idempotent: daemons left over from an earlier run are
# stopped first (by PID file). Needs root; installs the Debian packages if missing.
set -euo pipefail
T0=$(date +%s%N)
HERE=$(cd "$(dirname "$0")" && pwd)
bash "$HERE/slurm-down.sh"
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
HOST=$(hostname -s)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))   # leave 1 GiB headroom
FAKE_GPUS=${SLURM_FAKE_GPUS:-0}
GRES_NODE=""; GRES_TYPES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  # GPU model "fake": --gpus=N and --gpus=fake:N both schedule
  GRES_TYPES="GresTypes=gpu"; GRES_NODE="Gres=gpu:fake:${FAKE_GPUS}"
  # fake devices: one distinct empty file each (slurmd rejects the same File twice, and
  # without File= it reports 0 GPUs and drains the node)
  : > /etc/slurm/gres.conf
  for i in $(seq 0 $((FAKE_GPUS-1))); do
    : > "/run/slurm-fake-gpu$i"
    echo "NodeName=${HOST} Name=gpu Type=fake File=/run/slurm-fake-gpu$i" >> /etc/slurm/gres.conf
  done
else
  rm -f /etc/slurm/gres.conf
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=localci
SlurmctldHost=${HOST}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue/scontrol this long (>= 300 s for the plugin's squeue
# status; an hour lets tests/test_slurm.py read every job back)
MinJobAge=3600
${GRES_TYPES}
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} ${GRES_NODE} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# munge: key is created by the Debian postinst; create one if missing
if [ ! -s /etc/munge/munge.key ]; then mungekey --create --keyfile=/etc/munge/munge.key; fi
chown munge:munge /etc/munge/munge.key /run/munge; chmod 400 /etc/munge/munge.key
runuser -u munge -- /usr/sbin/munged --force   # daemonizes; pid in /run/munge/munged.pid
munge -n | unmunge >/dev/null                # sanity check
/usr/sbin/slurmctld -c                       # -c: ignore saved state; daemonizes; pid in /run/slurmctld.pid
if ! /usr/sbin/slurmd; then                  # daemonizes; pid in /run/slurmd.pid
  echo "slurmd failed to start:"; tail -n 20 /var/log/slurm/slurmd.log; exit 1
fi
# wait for the node to become idle
for i in $(seq 1 30); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then break; fi
  sleep 1
done
sinfo
if ! sinfo -h -o '%T' | grep -qx idle; then
  echo "node not idle:"; sinfo -R; tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; exit 1
fi
echo "slurm up in $(( ($(date +%s%N) - T0) / 1000000 )) ms"
