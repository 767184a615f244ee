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
#
# Before that, init= is followed inside the new root as the kernel will follow it after
# switch_root (an absolute link target starts again at the new root): once switch_root has
# exec'd, a missing step is a kernel panic ("can't execute '/sbin/init': No such file or
# directory") that names neither the step nor the layer. A merged-/usr image whose
# `/lib -> usr/lib` became a directory (`tar x`/`dpkg-deb -x` into the image, or a directory
# in a node's layer) leaves `/sbin/init -> /lib/systemd/systemd` dangling that way.

# switchroot_resolve PATH: follow the absolute PATH inside $ONEROOT_NEWROOT, links included
# (at most 40, as the kernel). Prints the path it leads to (inside the root) and returns 0, or
# prints why it leads nowhere ("PATH -> LINK -> ...: /STEP is missing") and returns 1.
switchroot_resolve() {
	_sr_todo=$1
	_sr_done=''
	_sr_chain=$1
	_sr_links=0
	while :; do
		while [ "${_sr_todo#/}" != "$_sr_todo" ]; do _sr_todo=${_sr_todo#/}; done
		[ -n "$_sr_todo" ] || break
		_sr_part=${_sr_todo%%/*}
		_sr_todo=${_sr_todo#"$_sr_part"}
		case $_sr_part in
		.) continue ;;
		..) _sr_done=${_sr_done%/*}; continue ;;
		esac
		_sr_at="$ONEROOT_NEWROOT$_sr_done/$_sr_part"
		if [ -L "$_sr_at" ]; then
			_sr_links=$((_sr_links + 1))
			if [ "$_sr_links" -gt 40 ]; then
				echo "$_sr_chain: too many levels of symbolic links"
				return 1
			fi
			_sr_target=$(readlink "$_sr_at")
			case $_sr_target in
			/*) _sr_done='' ;;
			esac
			_sr_todo="$_sr_target$_sr_todo"
			_sr_chain="$_sr_chain -> $_sr_done/${_sr_todo#/}"
		elif [ -n "$_sr_todo" ] && [ ! -d "$_sr_at" ]; then
			if [ -e "$_sr_at" ]; then
				echo "$_sr_chain: $_sr_done/$_sr_part is not a directory"
			else
				echo "$_sr_chain: $_sr_done/$_sr_part is missing"
			fi
			return 1
		elif [ ! -e "$_sr_at" ]; then
			echo "$_sr_chain: $_sr_done/$_sr_part is missing"
			return 1
		else
			_sr_done="$_sr_done/$_sr_part"
		fi
	done
	echo "${_sr_done:-/}"
}

# switchroot_check_init: the image's init leads to an executable file; the mount points exist.
switchroot_check_init() {
	if ! _sc_init=$(switchroot_resolve "$ONEROOT_INIT"); then
		oneroot_fail "the root's init does not resolve: $_sc_init" \
			"look at that path in the image and in the node's layers on the server (a link such as /lib -> usr/lib replaced by a directory?), or give init=PATH"
		return 1
	fi
	if [ ! -f "$ONEROOT_NEWROOT$_sc_init" ] || [ ! -x "$ONEROOT_NEWROOT$_sc_init" ]; then
		oneroot_fail "the root's init $ONEROOT_INIT leads to $_sc_init, which is not an executable file" \
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
