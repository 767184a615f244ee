#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 10-kmod/lib.sh: load the kernel modules the build put in /etc/oneroot/modules.
#
# /etc/oneroot/modules: one module name a line, in load order ("#" starts a comment). busybox
# modprobe pulls each one's dependencies from /lib/modules/$(uname -r)/modules.dep, which the
# builder regenerated with `depmod -b` for exactly these modules. A module that fails to load is
# a warning, not a failure: a NIC driver without its hardware is normal, and a missing NFS or
# overlay driver fails its own stage later with a precise message.

: "${ONEROOT_MODULES_LIST:=/etc/oneroot/modules}"

kmod_load_all() {
	_km_loaded=0
	_km_failed=''
	while read -r _km_name _km_rest; do
		case $_km_name in
		'' | '#'*) continue ;;
		esac
		if oneroot_run modprobe "$_km_name" 2>"$ONEROOT_RUN/last.err"; then
			_km_loaded=$((_km_loaded + 1))
		else
			_km_failed="$_km_failed $_km_name"
		fi
	done <"$ONEROOT_MODULES_LIST"
	if [ -n "$_km_failed" ]; then
		oneroot_log "modules not loaded:$_km_failed"
	fi
	ONEROOT_STAGE_MESSAGE="$_km_loaded modules loaded"
	return 0
}
