#!/bin/sh
# Re-captures the verifier-log corpus in tests/fixtures/corpus/ from the 7.3 kernel in a guest.
#
#   tests/capture-corpus.sh [SCHEDULER_OBJECT_OR_BINARY...]
#
# Builds every tests/bpf/corpus/*.bpf.c with clang-19, loads each program with ktstr-veristat
# at verifier log levels 1 and 2 (both plus BPF_LOG_STATS) in one ktstr guest, and writes each
# program's log as tests/fixtures/corpus/<program>.l<level>.log.zst. Extra arguments (BPF
# objects, or scheduler binaries embedding one) are captured at level 2 only, each by its own
# ktstr-veristat run (one run for all of them ran the guest out of memory), each log written as
# sched-<file>-<program>.l2.log.zst. Environment: KTSTR (the ktstr binary, default `ktstr`),
# KTSTR_KERNEL (the kernel), KCONFIG (its config, default `config` beside KTSTR_KERNEL: libbpf
# reads it for schedulers' `__kconfig` externs, and the Debian kernel has no /proc/config.gz),
# CLANG (default clang-19). Map addresses and verification times
# differ from one capture to the next.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
crate=$(dirname "$here")
out=$here/fixtures/corpus
ktstr=${KTSTR:-ktstr}
clang=${CLANG:-clang-19}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for f in "$here"/bpf/corpus/*.bpf.c; do
	b=$(basename "$f" .c)
	"$clang" -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c "$f" -o "$work/$b.o"
done
(cd "$crate" && cargo build -q -p ktstr-verifier --features capture --bin ktstr-veristat)
veristat=$(cd "$crate" && cargo metadata -q --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/ktstr-veristat

incs="-i $veristat"
for o in "$work"/*.bpf.o; do incs="$incs -i $o"; done
scheds=""
for s in "$@"; do
	incs="$incs -i $s"
	scheds="$scheds /include-files/$(basename "$s")"
done
kconfig=${KCONFIG:-$(dirname "${KTSTR_KERNEL:-/nonexistent}")/config}
setup=true
if [ -f "$kconfig" ]; then
	incs="$incs -i $kconfig"
	setup='mkdir -p /boot && cp /include-files/config /boot/config-$(uname -r)'
fi
# shellcheck disable=SC2086
"$ktstr" exec --topology 1,1,1,1 --memory 2048 $incs -- sh -c "
	cd /include-files
	$setup
	for l in 1 2; do ./ktstr-veristat --log-level \$l *.bpf.o; done
	for s in $scheds; do ./ktstr-veristat --log-level 2 \$s; done
	true" > "$work/cap.json"

python3 - "$work/cap.json" "$out" "$*" <<'PY'
import json, os, sys
cap, out, scheds = sys.argv[1], sys.argv[2], sys.argv[3].split()
docs = [json.loads(l) for l in open(cap) if l.startswith("{")]
manifest = open(os.path.join(out, "MANIFEST"), "w")
manifest.write("# log\tloaded\tprocessed_insns\terror\n")
for n, d in enumerate(docs):
    level = d["log_level"] & 3
    for o in d["objects"]:
        prefix = "sched-" + os.path.basename(o["file"]) + "-" if n >= 2 else ""
        for p in o["programs"]:
            path = os.path.join(out, f"{prefix}{p['name']}.l{level}.log")
            with open(path, "w") as f:
                f.write(p["log"] or "")
            print(path, "loaded" if p["loaded"] else "FAILED", p["stats"]["processed_insns"], p["error"] or "")
            manifest.write(f"{os.path.basename(path)}.zst\t{str(p['loaded']).lower()}\t{p['stats']['processed_insns']}\t{p['error'] or ''}\n")
            if not p["loaded"] and not p["log"]:
                print("   ", "\n    ".join(p["libbpf"][-4:]))
PY
for f in "$out"/*.log; do zstd -q -19 -f --rm "$f"; done
