#!/bin/sh
# Runs as root in the Debian 12 lab VM: node01's three layers mounted as its initramfs mounts
# them (kernel NFS client, vers=4.2), then its union as the initramfs makes it for a persistent
# node (fuse-overlayfs over an rw NFS top), then the copy-ups a booting Debian does under /var
# and /etc. Each VARIANT (more fuse-overlayfs options, `-` for none) gets fresh upper and work
# dirs in the node's layer (v<i>/upper, v<i>/work) and its own strace of fuse-overlayfs; a
# VARIANT `nfs=OPTS` instead mounts the node's layer again with OPTS (no more fuse options).
#   sh fuse_probe.sh SERVER IMAGE GROUP NODE VARIANT...
# Prints `OK   <variant>: <step>` or `FAIL <variant>: <step>: <error>` per step.
set -u
SERVER=$1 IMAGE=$2 GROUP=$3 NODE=$4
shift 4
T=/opt/host-tools
R=/run/probe
LOADER="$T/lib/ld-linux-x86-64.so.2 --library-path $T/lib"
step() {
	_name=$1
	shift
	if _out=$("$@" 2>&1); then
		echo "OK   $V: $_name"
	else
		echo "FAIL $V: $_name: $(echo "$_out" | tail -n 1)"
	fi
}
V=mount
modprobe fuse 2>/dev/null
mkdir -p $R/1 $R/2 $R/3 $R/root
step "mount image" mount -t nfs -o vers=4.2,ro "$SERVER:$IMAGE" $R/1
step "mount group" mount -t nfs -o vers=4.2,ro "$SERVER:$GROUP" $R/2
step "mount node" mount -t nfs -o vers=4.2,rw "$SERVER:$NODE" $R/3
i=0
for V in "$@"; do
	i=$((i + 1))
	extra=${V#-}
	case $V in
	nfs=*)
		extra=''
		umount $R/3
		step "mount node -o ${V#nfs=}" mount -t nfs -o "${V#nfs=}" "$SERVER:$NODE" $R/3
		;;
	esac
	top=$R/3/v$i
	mkdir -p "$top/upper" "$top/work"
	O="lowerdir=$R/2:$R/1,upperdir=$top/upper,workdir=$top/work,allow_other,dev,suid,fast_ino=1${extra:+,$extra}"
	echo "---- variant $V: fuse-overlayfs -o $O"
	# shellcheck disable=SC2086 # LOADER is a command line
	$LOADER $T/bin/strace -f -o $R/strace.$i.log $LOADER $T/bin/fuse-overlayfs -f -o "$O" $R/root \
		2>$R/fuse.$i.err &
	pid=$!
	for _ in $(seq 100); do grep -q " $R/root " /proc/mounts && break; sleep 0.1; done
	step "union mounted" grep -q " $R/root " /proc/mounts
	step "ls /var" ls $R/root/var
	step "write /var/lib/probe" sh -c "echo probe > $R/root/var/lib/probe"
	step "mkdir /var/log/new" mkdir $R/root/var/log/new
	step "append /var/log/old" sh -c "echo more >> $R/root/var/log/old"
	step "write /etc/probe" sh -c "echo probe > $R/root/etc/probe"
	step "append /etc/passwd" sh -c "echo 'x:x:1:1::/:/bin/sh' >> $R/root/etc/passwd"
	step "rm /etc/os-release" rm $R/root/etc/os-release
	step "read back /var/lib/probe" grep -q probe $R/root/var/lib/probe
	umount $R/root 2>/dev/null || umount -l $R/root
	for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
	kill $pid 2>/dev/null
	echo "---- variant $V: upper"
	find "$top/upper" -printf '%M %u %p\n' 2>&1 | sed "s#$top/##"
	echo "---- variant $V: fuse-overlayfs stderr"
	tail -n 5 $R/fuse.$i.err
	echo "---- variant $V: failed syscalls (strace -f of fuse-overlayfs), by kind"
	grep -oE '^[0-9]+ +[a-z0-9_]+\(.*= -1 E[A-Z]+' $R/strace.$i.log |
		sed -E 's/^[0-9]+ +([a-z0-9_]+)\(.*= -1 (E[A-Z]+)$/\1 \2/' | sort | uniq -c
	echo "---- variant $V: failed syscalls, first 25 (not ENOENT/EAGAIN/ENODATA)"
	grep -E '= -1 E' $R/strace.$i.log | grep -vE 'ENOENT|EAGAIN|ENODATA' | head -n 25
done
