/include-files/scx_ktstr >/tmp/sched.out 2>/tmp/sched.err &
i=0; while [ "$(cat /sys/kernel/sched_ext/state)" != enabled ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
spin() { # iterations of a shell loop in 3 s, two loops on two CPUs
  pids=""
  for c in 0 1; do (n=0; end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do n=$((n+1)); done; echo $n > /tmp/spin.$c) & pids="$pids $!"; done
  wait $pids
  echo "spin $(cat /tmp/spin.0) $(cat /tmp/spin.1)"
}
forks() { # 400 fork+exec of true
  s=$(cat /proc/uptime | cut -d' ' -f1); i=0; while [ $i -lt 400 ]; do /bin/true; i=$((i+1)); done; e=$(cat /proc/uptime | cut -d' ' -f1); echo "forks $s $e"
}
for round in 1 2; do
  echo "=== round $round without probes"; spin; forks
  /include-files/probe_run /include-files/probe.bpf.o /include-files/plan.json 20 100000 > /tmp/probe.out 2> /tmp/probe.err &
  PR=$!
  i=0; while ! grep -q attached /tmp/probe.out && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done
  echo "=== round $round with probes: $(head -1 /tmp/probe.out)"; spin; forks
  wait $PR; echo "records: $(grep -c ^REC /tmp/probe.out) $(grep ^HEAD /tmp/probe.out)"
done
echo "=== state $(cat /sys/kernel/sched_ext/state)"
