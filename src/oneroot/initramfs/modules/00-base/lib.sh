#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 00-base/lib.sh: the core of the oneroot /init: messages, dry-run, retries, stages and hooks,
# the failure path, and the kernel command line.
#
# Kernel command line (words split at blanks; quoting is not supported; the last word wins):
#   root=SPEC                the layers, parsed by 40-rootspec (grammar in parse-root.sh)
#   ip=dhcp|on|any|both      bring the network up with DHCP (also the default without ip=)
#   ip=off|none              no network (only useful with oneroot.break=)
#   BOOTIF=01-aa-bb-cc-dd-ee-ff   the MAC the firmware booted from: DHCP on that NIC only
#   oneroot.break=STAGE      a shell before STAGE runs; exit the shell to go on
#   oneroot.status=URL       stage reports are POSTed there (stage=..&status=..&message=..)
#   oneroot.dhcp.tries=N     DHCP rounds before the dhcp stage fails (default 5)
#   oneroot.nfs.tries=N      mount attempts per NFS layer (default 6)
#   oneroot.fuse.opts=A,B    more fuse-overlayfs options for an rw NFS top (e.g. static_nlink)
#   oneroot.union.lowerxattrs=off  the union reads its lower layers through a read-only
#                            fuse-overlayfs that lists no xattrs (60-union; the server sets it
#                            for nfs_server=ganesha-ceph)
#   oneroot.debug            trace every command (set -x)
#   init=PATH                the image's init (default /sbin/init)
#   systemd.unit=NAME | softlevel=NAME | single | emergency | S | 1..5
#                            the runlevel: recorded and passed on to the image's init
#
# Stages, in order: ONEROOT_STAGES, set with the module order ONEROOT_MODULES in
# $ONEROOT_LIB/generated.sh, which the builder writes from oneroot.model.events.INITRAMFS_STAGES
# and the modules' `depends`. A stage runs the hooks $ONEROOT_LIB/hooks/STAGE/MODULE.sh (one per
# module, in module order) in this shell. A hook fails by
# `oneroot_fail REASON HINT`; the stage then prints
#   oneroot: stage S failed: REASON
#   oneroot: fix: HINT
# reports stage=failed and opens a shell; leaving the shell runs the stage again.
#
# Test seams (never set on a node): ONEROOT_DRYRUN=1 prints each state-changing command as
# `+ cmd args` on stdout instead of running it (oneroot_dryrun_hook may act it out);
# ONEROOT_TEST_STUBS names a file /init sources after the libraries; ONEROOT_CMDLINE replaces /proc/cmdline;
# ONEROOT_SYSFS replaces /sys, ONEROOT_RUN replaces /run/oneroot, ONEROOT_NEWROOT /sysroot.

: "${ONEROOT_LIB:=/lib/oneroot}"
: "${ONEROOT_SYSFS:=/sys}"
: "${ONEROOT_RUN:=/run/oneroot}"
: "${ONEROOT_NEWROOT:=/sysroot}"
: "${ONEROOT_DRYRUN:=}"

oneroot_log() {
	printf 'oneroot: %s\n' "$*" >&2
}

# oneroot_quote ARGS...: sets _q to the words, single-quoted where the shell would need it.
oneroot_quote() {
	_q=''
	for _qa in "$@"; do
		case $_qa in
		'' | *[!A-Za-z0-9_./:=,@%+-]*)
			_qe=''
			_qr=$_qa
			while :; do
				case $_qr in
				*"'"*)
					_qe="$_qe${_qr%%"'"*}'\\''"
					_qr=${_qr#*"'"}
					;;
				*)
					_qe="$_qe$_qr"
					break
					;;
				esac
			done
			_qa="'$_qe'"
			;;
		esac
		_q="$_q${_q:+ }$_qa"
	done
}

# oneroot_run CMD ARGS...: run a state-changing command, or in dry-run mode print it and
# return what oneroot_dryrun_hook (a test's stand-in for the command) returns.
oneroot_run() {
	if [ -n "$ONEROOT_DRYRUN" ]; then
		oneroot_quote "$@"
		printf '+ %s\n' "$_q"
		oneroot_dryrun_hook "$@"
		return
	fi
	"$@"
}

# oneroot_dryrun_hook CMD ARGS...: tests redefine it to act out commands; succeeds by default.
oneroot_dryrun_hook() {
	return 0
}

# oneroot_fail REASON HINT: a hook's way to fail its stage; always returns 1.
oneroot_fail() {
	ONEROOT_FAIL_REASON=$1
	ONEROOT_FAIL_HINT=${2-}
	return 1
}

# oneroot_retry TRIES WHAT CMD ARGS...: run CMD until it succeeds, at most TRIES times, waiting
# 1, 2, 4, 8, 16, 16... seconds in between. On failure ONEROOT_LAST_ERROR is CMD's last
# line of stderr.
oneroot_retry() {
	_rt_tries=$1
	_rt_what=$2
	shift 2
	_rt_n=1
	_rt_delay=1
	while :; do
		if "$@" 2>"$ONEROOT_RUN/last.err"; then
			return 0
		fi
		ONEROOT_LAST_ERROR=''
		while IFS= read -r _rt_line; do
			[ -n "$_rt_line" ] && ONEROOT_LAST_ERROR=$_rt_line
		done <"$ONEROOT_RUN/last.err"
		: "${ONEROOT_LAST_ERROR:=exit status not zero}"
		if [ "$_rt_n" -ge "$_rt_tries" ]; then
			return 1
		fi
		oneroot_log "$_rt_what failed (try $_rt_n of $_rt_tries): $ONEROOT_LAST_ERROR; again in ${_rt_delay}s"
		oneroot_run sleep "$_rt_delay"
		_rt_n=$((_rt_n + 1))
		_rt_delay=$((_rt_delay * 2))
		if [ "$_rt_delay" -gt 16 ]; then
			_rt_delay=16
		fi
	done
}

# oneroot_is_count VALUE: a positive decimal number.
oneroot_is_count() {
	case $1 in
	'' | *[!0-9]* | 0*) return 1 ;;
	esac
	return 0
}

# oneroot_parse_cmdline TEXT: sets the ONEROOT_* values listed at the top of this file.
oneroot_parse_cmdline() {
	ONEROOT_ROOT=''
	ONEROOT_HAS_ROOT=''
	ONEROOT_IP=''
	ONEROOT_BOOTIF=''
	ONEROOT_BREAK=''
	ONEROOT_STATUS=''
	ONEROOT_DHCP_TRIES=5
	ONEROOT_NFS_TRIES=6
	ONEROOT_DEBUG=''
	ONEROOT_FUSE_OPTS=''
	ONEROOT_LOWER_XATTRS=on
	ONEROOT_INIT=/sbin/init
	ONEROOT_RUNLEVEL=''
	set -f
	# shellcheck disable=SC2086 # split into words on purpose (globbing is off)
	set -- $1
	set +f
	for _cw in "$@"; do
		case $_cw in
		root=*)
			ONEROOT_ROOT=${_cw#root=}
			ONEROOT_HAS_ROOT=1
			;;
		ip=*) ONEROOT_IP=${_cw#ip=} ;;
		BOOTIF=*) ONEROOT_BOOTIF=$(oneroot_bootif_mac "${_cw#BOOTIF=}") ;;
		oneroot.break=*) ONEROOT_BREAK=${_cw#oneroot.break=} ;;
		oneroot.break) ONEROOT_BREAK=switch_root ;;
		oneroot.status=*) ONEROOT_STATUS=${_cw#oneroot.status=} ;;
		oneroot.dhcp.tries=*)
			if oneroot_is_count "${_cw#*=}"; then ONEROOT_DHCP_TRIES=${_cw#*=}; fi
			;;
		oneroot.nfs.tries=*)
			if oneroot_is_count "${_cw#*=}"; then ONEROOT_NFS_TRIES=${_cw#*=}; fi
			;;
		oneroot.fuse.opts=*) ONEROOT_FUSE_OPTS=${_cw#oneroot.fuse.opts=} ;;
		oneroot.union.lowerxattrs=off) ONEROOT_LOWER_XATTRS=off ;;
		oneroot.union.lowerxattrs=on) ONEROOT_LOWER_XATTRS=on ;;
		oneroot.debug) ONEROOT_DEBUG=1 ;;
		init=*) ONEROOT_INIT=${_cw#init=} ;;
		systemd.unit=*) ONEROOT_RUNLEVEL=${_cw#systemd.unit=} ;;
		softlevel=*) ONEROOT_RUNLEVEL=${_cw#softlevel=} ;;
		single | emergency | rescue | S | s | [1-5]) ONEROOT_RUNLEVEL=$_cw ;;
		esac
	done
}

# oneroot_bootif_mac VALUE: pxelinux's BOOTIF (01-aa-bb-cc-dd-ee-ff, hardware type 01) as
# aa:bb:cc:dd:ee:ff in lower case; prints nothing for anything else.
oneroot_bootif_mac() {
	_bm=$1
	case $_bm in
	01-??-??-??-??-??-??) _bm=${_bm#01-} ;;
	??-??-??-??-??-??) ;;
	*) return 0 ;;
	esac
	case $_bm in
	*[!0-9A-Fa-f-]*) return 0 ;;
	esac
	printf '%s\n' "$_bm" | tr 'A-F-' 'a-f:'
}

# oneroot_is_stage NAME
oneroot_is_stage() {
	# shellcheck disable=SC2153 # set in generated.sh
	case " $ONEROOT_STAGES " in
	*" $1 "*) return 0 ;;
	esac
	return 1
}

# oneroot_run_hooks STAGE: source every hook of STAGE in module order; stops at the first failure.
oneroot_run_hooks() {
	for _hm in $ONEROOT_MODULES; do
		_hk="$ONEROOT_LIB/hooks/$1/$_hm.sh"
		[ -e "$_hk" ] || continue
		# shellcheck disable=SC1090 # hooks are found at run time
		. "$_hk" || return 1
	done
	return 0
}

# oneroot_shell STAGE WHY: an interactive shell on the console; returns when it exits.
oneroot_shell() {
	oneroot_log "shell at stage $1 ($2); exit the shell to continue"
	if [ -n "$ONEROOT_DRYRUN" ]; then
		oneroot_run sh -i
		return 0
	fi
	PS1="oneroot:$1# " setsid cttyhack sh -i || PS1="oneroot:$1# " sh -i
	return 0
}

# oneroot_stage STAGE: run a stage: break first if asked; report; on failure print the reason
# and the fix, report, open a shell and try again once it exits. In dry-run mode a failure
# returns 1 instead of opening a shell.
oneroot_stage() {
	if [ "$ONEROOT_BREAK" = "$1" ]; then
		oneroot_shell "$1" "oneroot.break=$1"
	fi
	while :; do
		ONEROOT_FAIL_REASON=''
		ONEROOT_FAIL_HINT=''
		ONEROOT_STAGE_MESSAGE=''
		if oneroot_run_hooks "$1"; then
			case $1 in
			dhcp | layers | union) oneroot_report "$1" ok "$ONEROOT_STAGE_MESSAGE" ;;
			esac
			return 0
		fi
		: "${ONEROOT_FAIL_REASON:=a hook of stage $1 failed}"
		: "${ONEROOT_FAIL_HINT:=run the commands of the stage by hand from this shell}"
		oneroot_log "stage $1 failed: $ONEROOT_FAIL_REASON"
		oneroot_log "fix: $ONEROOT_FAIL_HINT"
		oneroot_report failed failed "$1: $ONEROOT_FAIL_REASON"
		if [ -n "$ONEROOT_DRYRUN" ]; then
			return 1
		fi
		oneroot_shell "$1" "stage $1 failed"
		oneroot_log "trying stage $1 again"
	done
}

# oneroot_report STAGE STATUS MESSAGE: replaced by 90-report (which depends on this module, so
# its library is sourced after this one); a no-op without it.
oneroot_report() {
	return 0
}

# oneroot_mount_early: the kernel filesystems and /run, before anything else.
oneroot_mount_early() {
	oneroot_run mkdir -p /proc /sys /dev /run /tmp "$ONEROOT_NEWROOT"
	oneroot_run mount -t proc -o nosuid,nodev,noexec proc /proc
	oneroot_run mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
	oneroot_run mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
	oneroot_run mkdir -p /dev/pts
	oneroot_run mount -t devpts -o gid=5,mode=620 devpts /dev/pts
	oneroot_run mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
	oneroot_run mkdir -p "$ONEROOT_RUN/layers"
}
