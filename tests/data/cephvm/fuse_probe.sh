#!/bin/sh
# Runs as root in the Debian 12 lab VM: node01's three layers mounted as its initramfs mounts
# them (kernel NFS client, vers=4.2), then its union as the initramfs makes it for a persistent
# node (fuse-overlayfs over an rw NFS top, stdin from /dev/null), then the copy-ups a booting
# Debian does under /var and /etc, a delete and a read-back.
#   sh fuse_probe.sh SERVER IMAGE GROUP NODE VARIANT...
# Each VARIANT gets fresh upper and work dirs in the node's layer (v<i>/upper, v<i>/work) and its
# own strace of fuse-overlayfs:
#   -          the initramfs's fuse-overlayfs options
#   o=OPTS     those plus OPTS
#   nfs=OPTS   the node's layer mounted again with OPTS (the initramfs's fuse options)
#   knfsd      the control: the same three layers copied to this VM's disk and served by its
#              knfsd on 127.0.0.1 (NFSv4.2), the initramfs's fuse options
#   tmpfs      an ephemeral node's union instead: kernel overlayfs over the two NFS layers,
#              upper and work on a tmpfs (the initramfs's `overlay` plan)
#   filter     the lower layers through a read-only fuse-overlayfs with noxattrs=1 first (it
#              lists no xattrs), the union's lowerdir is that mount
#   tmpfs+filter  tmpfs, its lowerdir that read-only mount
# Prints `OK   <variant>: <step>` or `FAIL <variant>: <step>: <error>` per step, and
# `XATTR <variant> <layer>: <name> <ok|ERRNO>` for each xattr the NFS client lists on a
# layer's directories (fuse-overlayfs copies every listed xattr when it copies a directory up).
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
# xattrs LAYER DIR...: what the NFS client lists on each DIR, and whether it reads each name.
xattrs() {
	python3 - "$V" "$@" <<'EOF'
import errno, os, sys
variant, layer, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
for d in dirs:
    try:
        names = os.listxattr(d)
    except OSError as e:
        print(f"XATTR {variant} {layer}: listxattr {errno.errorcode[e.errno]}")
        continue
    for name in names or ["(none)"]:
        if name == "(none)":
            print(f"XATTR {variant} {layer}: (none)")
            continue
        try:
            os.getxattr(d, name)
            print(f"XATTR {variant} {layer}: {name} ok")
        except OSError as e:
            print(f"XATTR {variant} {layer}: {name} {errno.errorcode[e.errno]}")
EOF
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
	extra='' L=$R
	case $V in
	o=*) extra=${V#o=} ;;
	nfs=*)
		umount $R/3
		step "mount node -o ${V#nfs=}" mount -t nfs -o "${V#nfs=}" "$SERVER:$NODE" $R/3
		;;
	knfsd)
		L=/run/probe-knfsd
		systemctl start nfs-server
		for n in 1 2 3; do
			mkdir -p /srv/ctl/$n $L/$n
			cp -a $R/$n/. /srv/ctl/$n/
			exportfs -o rw,no_root_squash,no_subtree_check,fsid=$((4710 + n)) 127.0.0.1:/srv/ctl/$n
		done
		step "mount knfsd layers" sh -c "mount -t nfs -o vers=4.2,ro 127.0.0.1:/srv/ctl/1 $L/1 &&
			mount -t nfs -o vers=4.2,ro 127.0.0.1:/srv/ctl/2 $L/2 &&
			mount -t nfs -o vers=4.2,rw 127.0.0.1:/srv/ctl/3 $L/3"
		;;
	tmpfs*)
		mkdir -p $R/t$i
		mount -t tmpfs -o mode=0755 tmpfs $R/t$i
		;;
	esac
	lower=$L/2:$L/1
	case $V in
	*filter)
		mkdir -p $R/lo$i
		# shellcheck disable=SC2086 # LOADER is a command line
		$LOADER $T/bin/fuse-overlayfs -o "lowerdir=$lower,noxattrs=1,fast_ino=1" $R/lo$i \
			</dev/null 2>$R/filter.$i.err
		step "read-only xattr-less mount of the lower layers" grep -q " $R/lo$i " /proc/mounts
		xattrs filter $R/lo$i $R/lo$i/etc
		lower=$R/lo$i
		;;
	esac
	xattrs image $L/1 $L/1/etc $L/1/var
	xattrs node $L/3
	top=$L/3/v$i
	case $V in tmpfs*) top=$R/t$i ;; esac
	mkdir -p "$top/upper" "$top/work"
	: >$R/strace.$i.log
	pid=''
	case $V in tmpfs*) kernel=1 ;; *) kernel='' ;; esac
	if [ -n "$kernel" ]; then
		O="lowerdir=$lower,upperdir=$top/upper,workdir=$top/work"
		echo "---- variant $V: mount -t overlay -o $O"
		mount -t overlay -o "$O" overlay $R/root
	else
		O="lowerdir=$lower,upperdir=$top/upper,workdir=$top/work,allow_other,dev,suid,fast_ino=1${extra:+,$extra}"
		echo "---- variant $V: fuse-overlayfs -o $O"
		# shellcheck disable=SC2086 # LOADER is a command line
		$LOADER $T/bin/strace -f -o $R/strace.$i.log $LOADER $T/bin/fuse-overlayfs -f -o "$O" \
			$R/root </dev/null 2>$R/fuse.$i.err &
		pid=$!
	fi
	for _ in $(seq 100); do grep -q " $R/root " /proc/mounts && break; sleep 0.1; done
	step "union mounted" grep -q " $R/root " /proc/mounts
	step "ls /var" ls $R/root/var
	mark=$(wc -l <$R/strace.$i.log)
	step "write /var/lib/probe" sh -c "echo probe > $R/root/var/lib/probe"
	step "mkdir /var/log/new" mkdir $R/root/var/log/new
	step "append /var/log/old" sh -c "echo more >> $R/root/var/log/old"
	step "write /etc/probe" sh -c "echo probe > $R/root/etc/probe"
	step "append /etc/passwd" sh -c "echo 'x:x:1:1::/:/bin/sh' >> $R/root/etc/passwd"
	step "rm /etc/os-release" rm $R/root/etc/os-release
	step "read back /var/lib/probe" grep -q probe $R/root/var/lib/probe
	step "sync" sync
	umount $R/root 2>/dev/null || umount -l $R/root
	if [ -n "$pid" ]; then
		for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
		kill $pid 2>/dev/null
	fi
	echo "---- variant $V: upper"
	find "$top/upper" -printf '%M %u %p\n' 2>&1 | sed "s#$top/##"
	echo "---- variant $V: fuse-overlayfs stderr, kernel log"
	tail -n 5 $R/fuse.$i.err 2>/dev/null
	dmesg | grep -i overlayfs | tail -n 5
	echo "---- variant $V: failed syscalls while writing (strace -f of fuse-overlayfs), first 20"
	tail -n +$((mark + 1)) $R/strace.$i.log | grep -E '= -1 E' | grep -vE 'ENOENT|EAGAIN|ENODATA' |
		head -n 20
	case $V in
	knfsd)
		umount $L/1 $L/2 $L/3
		exportfs -ua
		;;
	*filter) umount $R/lo$i ;;
	esac
done
