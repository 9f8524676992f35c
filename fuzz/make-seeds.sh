#!/bin/sh
# fuzz/make-seeds.sh - seed corpora from small images made by qemu-img and
# qemu-io (run by hand; the corpora are committed under fuzz/corpus/).
set -eu
cd "$(dirname "$0")"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mk() { # name options size [qemu-io commands...]
    n=$1 o=$2 s=$3; shift 3
    qemu-img create -q -f qcow2 ${o:+-o "$o"} "$t/$n" "$s"
    for c in "$@"; do qemu-io -c "$c" "$t/$n" >/dev/null; done
}
mk c512 cluster_size=512 1M 'write -P 1 0 3k' 'write -z 8k 2k' 'write -P 2 300k 1k'
mk c1k-v2 compat=0.10,cluster_size=1k 1M 'write -P 3 0 5k'
mk c4k-rc1 cluster_size=4k,refcount_bits=1 1M 'write -P 4 4k 8k'
mk c4k-rc64 cluster_size=4k,refcount_bits=64 1M 'write -P 5 0 4k' 'discard 0 4k'
mk x16k extended_l2=on,cluster_size=16k 1M 'write -P 6 1k 2k' 'write -z 8k 1k'
mk lazy cluster_size=4k,lazy_refcounts=on 1M 'write -P 7 0 4k'
mk pre cluster_size=4k,preallocation=metadata 64k
qemu-img create -q -f raw "$t/p.raw" 256k
qemu-io -f raw -c 'write -P 9 0 64k' "$t/p.raw" >/dev/null
qemu-img convert -c -O qcow2 -o cluster_size=4k -f raw "$t/p.raw" "$t/zlib"
qemu-img convert -c -O qcow2 -o cluster_size=4k,compression_type=zstd -f raw "$t/p.raw" "$t/zstd"
mk snap cluster_size=4k 256k 'write -P 8 0 8k'
qemu-img snapshot -c s1 "$t/snap"
qemu-io -c 'write -P 9 0 4k' "$t/snap" >/dev/null
mk bm cluster_size=4k 256k
qemu-img bitmap --add "$t/bm" b0
qemu-img create -q -f qcow2 -u -b b.qcow2 -F qcow2 -o cluster_size=4k "$t/over" 256k
cp "$t/c512" "$t/b.qcow2"
qemu-io -c 'write -P 1 0 1k' "$t/over" >/dev/null 2>&1 || true
mkdir -p corpus/header corpus/open corpus/chain corpus/check
for f in c512 c1k-v2 c4k-rc1 c4k-rc64 x16k lazy pre zlib zstd snap bm over; do
    cp "$t/$f" corpus/open/$f
    cp "$t/$f" corpus/check/$f
    head -c 4096 "$t/$f" > corpus/header/$f
done
sep='
--8<--
'
printf '%s' "$(cat "$t/over")$sep$(cat "$t/c512")" > corpus/chain/over-c512
cp "$t/over" "$t/a"
qemu-img rebase -u -b sub/d.qcow2 -F qcow2 "$t/a"
{ cat "$t/a"; printf '%s' "$sep"; cat "$t/snap"; printf '%s' "$sep"; cat "$t/zlib"; printf '%s' "$sep"; cat "$t/x16k"; } > corpus/chain/to-sub
qemu-img rebase -u -b a.qcow2 -F qcow2 "$t/a"
cp "$t/a" corpus/chain/self-loop

# volume: live disk, snapshots a and b, journal, leftover overlay, script (see fuzz_volume.c)
mkdir -p corpus/volume
A=snap-a-vm-1-disk-0.qcow2 B=snap-b-vm-1-disk-0.qcow2
mk "$A" cluster_size=512 64k 'write -P 1 0 1k' 'write -P 2 32k 512'
qemu-img create -q -f qcow2 -b "$A" -F qcow2 -o cluster_size=512 "$t/$B" 64k
qemu-io -c 'write -P 3 512 1k' "$t/$B" >/dev/null
qemu-img create -q -f qcow2 -b "$B" -F qcow2 -o cluster_size=512 "$t/live-b" 64k
qemu-io -c 'write -P 4 1k 1k' "$t/live-b" >/dev/null
qemu-img create -q -f qcow2 -b "$A" -F qcow2 -o cluster_size=512 "$t/live-a" 64k
vol() { # out live a b journal new script(printf format)
    { cat "$2"; printf '%s' "$sep"; cat "$3"; printf '%s' "$sep"; cat "$4"; printf '%s' "$sep"
      printf '%s' "$5"; printf '%s' "$sep"; cat "$6"; printf '%s' "$sep"; printf "$7"; } > corpus/volume/"$1"
}
vol alone "$t/live-b" /dev/null /dev/null '' /dev/null '\000\000\004\001'
vol chain "$t/live-b" "$t/$A" "$t/$B" '' /dev/null '\000\002\012\023\004'
vol crash-delete "$t/live-b" "$t/$A" "$t/$B" '' /dev/null '\005\002\004'
vol crash-snap "$t/live-a" "$t/$A" /dev/null '' /dev/null '\003\020\004'
vol journal-delete "$t/live-b" "$t/$A" "$t/$B" \
    '{"op":"delete","snap":"b","file":"snap-b-vm-1-disk-0.qcow2","how":"commit","parent":"snap-a-vm-1-disk-0.qcow2","parent_fmt":"qcow2","children":["vm-1-disk-0.qcow2"]}' \
    /dev/null '\000\006\004'
vol journal-rename "$t/live-b" "$t/$A" "$t/$B" \
    '{"op":"rename","snap":"a","file":"snap-a-vm-1-disk-0.qcow2","to":"snap-c-vm-1-disk-0.qcow2","fmt":"qcow2","children":["snap-b-vm-1-disk-0.qcow2"]}' \
    /dev/null '\000\006\004'
vol leftover "$t/live-a" "$t/$A" /dev/null '' "$t/live-b" '\000\004\007'
echo "volume seeds: $(ls corpus/volume | wc -l) files"
