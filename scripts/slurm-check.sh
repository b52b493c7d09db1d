#!/usr/bin/env bash
# WARM as Slurm jobs on a real single-node Slurm (Debian's slurm-wlm + munge), checked against
# the one-process run: the average (and every member) must be bitwise equal.
#
#   scripts/slurm-check.sh [RECIPE]        (default recipes/tiny_warm.toml; needs root for apt)
#
# Installs slurm-wlm and munge if missing, starts munged, slurmctld and slurmd with a private
# configuration (SLURM_CONF) under a temporary folder, runs `rmtrain slurm RECIPE --submit`, waits
# for the three jobs, runs the same recipe in one process, compares, and stops every daemon it
# started. Prints the wall times of both runs. Environment: RMTRAIN (binary, default
# target/release/rmtrain, built if missing).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
recipe="${1:-recipes/tiny_warm.toml}"
rm_bin="${RMTRAIN:-$here/target/release/rmtrain}"
die() { echo "slurm-check: $*" >&2; exit 1; }
[ -f "$recipe" ] || die "$recipe: no such recipe"
if [ ! -x "$rm_bin" ]; then cargo build --release --locked; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-check: installing slurm-wlm and munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null
fi

work="$(mktemp -d /tmp/rmtrain-slurm.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done
  rm -rf "$work"
}
trap cleanup EXIT

# munge: a key and its folders owned by munge (mode 400 key), the daemon as the munge user.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  runuser -u munge -- munged --foreground >"$work/munged.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  munge -n | unmunge >/dev/null || die "munged did not start"
fi

host="$(hostname -s)"
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cpus="$(nproc)"
mkdir -p "$work/spool/ctld" "$work/spool/d" "$work/log"
export SLURM_CONF="$work/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=rmtrain-check
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$work/spool/ctld
SlurmdSpoolDir=$work/spool/d
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 0.2; done
sinfo -h -o %t | grep -q idle || { cat "$work/log/"*; die "the node did not come up idle"; }

# The same recipe into two run folders; members train EPOCHS epochs (default 40: a few seconds
# each for the tiny model) so that one can be requeued while it runs.
epochs="${EPOCHS:-40}"
with_out() { sed -E -e "s|^out = .*|out = \"$2\"|" -e "s|^epochs = .*|epochs = $epochs|" "$recipe" >"$1"; }
with_out "$work/array.toml" "$work/array"
with_out "$work/single.toml" "$work/single"

start=$(date +%s.%N)
read -r init members merge < <("$rm_bin" slurm "$work/array.toml" --cpus "$cpus" --submit | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["init"], d["members"], d["merge"])')
echo "slurm-check: submitted init $init, members $members, merge $merge" >&2
# A member that dies is run again by Slurm and resumes: requeue member 1 (scontrol requeue kills
# it) once it has written a checkpoint.
requeued=false
for _ in $(seq 1200); do
  if compgen -G "$work/array/members/member-1/checkpoints/step-*" >/dev/null; then
    if scontrol requeue "${members}_1" 2>"$work/requeue.err"; then
      requeued=true
      # Slurm delays a requeued job's start (its BeginTime) by two minutes once the killed run
      # has finished completing: then start it now.
      for _ in $(seq 300); do
        if [ "$(squeue -h -j "${members}_1" -o %T 2>/dev/null)" = PENDING ]; then
          scontrol update JobId="${members}_1" StartTime=now
          break
        fi
        sleep 0.1
      done
    fi
    break
  fi
  [ -z "$(squeue -h -j "$members" 2>/dev/null)" ] && break
  sleep 0.1
done
$requeued || echo "slurm-check: member 1 could not be requeued: $(cat "$work/requeue.err" 2>/dev/null)" >&2
while [ -n "$(squeue -h -j "$init,$members,$merge" 2>/dev/null)" ]; do sleep 0.5; done
array_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
logs="$work/array/slurm/logs"
grep -q "done in" "$logs"/merge-*.out 2>/dev/null || { tail -n 5 "$logs"/*.out >&2; die "the merge job did not finish"; }
n_member_logs=$(ls "$logs"/member-*.out | wc -l)
resumed=false
grep -q "resuming its newest checkpoint" "$logs"/member-1-*.out && resumed=true

start=$(date +%s.%N)
"$rm_bin" recipe "$work/single.toml" --no-progress >/dev/null 2>"$work/single.log" || { cat "$work/single.log" >&2; die "the one-process run failed"; }
single_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")

status=0
for f in warm/model.safetensors $(cd "$work/single" && ls members/*/model/model.safetensors); do
  if cmp -s "$work/array/$f" "$work/single/$f"; then
    echo "slurm-check: $f bitwise equal" >&2
  else
    echo "slurm-check: $f DIFFERS between the Slurm jobs and the one-process run" >&2
    status=1
  fi
done
if $requeued && ! $resumed; then
  echo "slurm-check: member 1 was requeued but its log shows no resume" >&2
  status=1
fi
echo "{\"recipe\": \"$recipe\", \"epochs\": $epochs, \"member_jobs\": $n_member_logs, \"member_1_requeued\": $requeued, \"member_1_resumed\": $resumed, \"slurm_wall_s\": $array_s, \"one_process_wall_s\": $single_s, \"bitwise_equal\": $([ $status = 0 ] && echo true || echo false)}"
exit $status
