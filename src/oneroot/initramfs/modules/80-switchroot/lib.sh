#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 80-switchroot/lib.sh: hand the node to the image's init.
#
# /dev, /sys and /run are moved into the new root (the layers stay visible there under
# /run/oneroot/layers, and the lease under /run/oneroot/net.env). /proc is moved too, unless
# fuse-overlayfs serves the root: the daemon stays in the old root and keeps using its /proc,
# so the new root gets a fresh proc instead. Then `switch_root` frees the initramfs and execs
# init= (default /sbin/init) with the words the kernel passed to /init (single, 3, ...); the
# image's init reads systemd.unit= or softlevel= from /proc/cmdline itself.

# switchroot_check_init: the image has its init and the mount points.
switchroot_check_init() {
	if [ ! -L "$ONEROOT_NEWROOT$ONEROOT_INIT" ] && [ ! -x "$ONEROOT_NEWROOT$ONEROOT_INIT" ]; then
		oneroot_fail "the root has no $ONEROOT_INIT" \
			"check that root= names the image (ls $ONEROOT_NEWROOT), or give init=PATH"
		return 1
	fi
	for _sc_dir in dev proc sys run; do
		if [ ! -d "$ONEROOT_NEWROOT/$_sc_dir" ]; then
			oneroot_fail "the root has no /$_sc_dir to mount on" \
				"create /dev, /proc, /sys and /run in the image (mkdir on the server)"
			return 1
		fi
	done
	return 0
}

# switchroot_move_mounts
switchroot_move_mounts() {
	for _sm_dir in dev sys run; do
		oneroot_run mount --move "/$_sm_dir" "$ONEROOT_NEWROOT/$_sm_dir" || {
			oneroot_fail "cannot move /$_sm_dir into the new root" "see dmesg"
			return 1
		}
	done
	if [ -n "${ONEROOT_FUSE-}" ]; then
		oneroot_run mount -t proc -o nosuid,nodev,noexec proc "$ONEROOT_NEWROOT/proc"
	else
		oneroot_run mount --move /proc "$ONEROOT_NEWROOT/proc"
	fi
}

# switchroot_exec: the switch_root stage.
switchroot_exec() {
	switchroot_check_init || return 1
	_se_msg="init=$ONEROOT_INIT runlevel=${ONEROOT_RUNLEVEL:-default}"
	oneroot_report switch_root ok "$_se_msg"
	switchroot_move_mounts || return 1
	oneroot_log "switch_root to $ONEROOT_INIT ($_se_msg)"
	eval "set -- $ONEROOT_INIT_ARGS"
	if [ -n "$ONEROOT_DRYRUN" ]; then
		oneroot_run exec switch_root "$ONEROOT_NEWROOT" "$ONEROOT_INIT" "$@"
		return 0
	fi
	exec switch_root "$ONEROOT_NEWROOT" "$ONEROOT_INIT" "$@"
}
