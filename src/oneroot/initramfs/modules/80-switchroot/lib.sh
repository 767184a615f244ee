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
# The kernel then loads init's interpreter from the new root as well: the ELF program
# interpreter (PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2) or a script's `#!` program. A
# missing one is the same panic, so each is followed the same way (at most 4 `#!` levels, as
# the kernel; an ELF interpreter's own PT_INTERP is never used). Last, the shared libraries
# the loader then loads (DT_NEEDED, e.g. libc.so.6): a missing one makes init exit 127 and
# the kernel panic as well. Those are asked of the image's own loader, not read here: it
# alone knows its search (ld.so.cache, RUNPATH, $ORIGIN, hwcaps, the libraries' own needs),
# and a search redone in sh that missed a directory would stop a node that boots fine.

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

# switchroot_uint FILE OFFSET SIZE: the unsigned SIZE-byte integer at OFFSET in FILE, in the
# byte order $_su_order (1: little-endian, 2: big-endian, ELF's EI_DATA); fails past the end.
switchroot_uint() {
	_su_size=$3
	_su_bytes=$(od -A n -t u1 -j "$2" -N "$3" "$1" 2>/dev/null) || return 1
	# shellcheck disable=SC2086 # one word per byte (digits only)
	set -- $_su_bytes
	[ "$#" -eq "$_su_size" ] || return 1
	_su_value=0
	_su_shift=0
	for _su_byte; do
		if [ "$_su_order" = 1 ]; then
			_su_value=$((_su_value | _su_byte << _su_shift))
			_su_shift=$((_su_shift + 8))
		else
			_su_value=$((_su_value << 8 | _su_byte))
		fi
	done
	echo "$_su_value"
}

# switchroot_interp FILE: what the kernel loads to run FILE, as "elf PATH" (the ELF program
# header PT_INTERP) or "script PATH" (the `#!` line); nothing for a static binary or what it
# cannot read as either (the kernel decides about those).
switchroot_interp() {
	_si_file=$1
	_si_magic=$(od -A n -t u1 -N 6 "$_si_file" 2>/dev/null) || return 0
	# shellcheck disable=SC2086 # one word per byte (digits only)
	set -- $_si_magic
	if [ "${1-} ${2-}" = "35 33" ]; then # "#!": the first word of the line (256 bytes, as the kernel)
		_si_line=$(head -c 256 "$_si_file" | head -n 1)
		_si_line=${_si_line#??}
		_si_line=${_si_line#"${_si_line%%[! 	]*}"}
		[ -z "$_si_line" ] || echo "script ${_si_line%%[ 	]*}"
		return 0
	fi
	[ "$#" -eq 6 ] && [ "$1 $2 $3 $4" = "127 69 76 70" ] || return 0
	_su_order=$6
	case $5 in
	1) _si_at='28 4 42 44 4 16' ;; # ELF32: e_phoff, its size, e_phentsize, e_phnum; p_offset, p_filesz
	2) _si_at='32 8 54 56 8 32' ;; # ELF64
	*) return 0 ;;
	esac
	# shellcheck disable=SC2086 # six numbers
	set -- $_si_at
	_si_phoff=$(switchroot_uint "$_si_file" "$1" "$2") &&
		_si_phentsize=$(switchroot_uint "$_si_file" "$3" 2) &&
		_si_phnum=$(switchroot_uint "$_si_file" "$4" 2) || return 0
	[ "$_si_phoff" -ge 0 ] && [ "$_si_phnum" -le 256 ] && [ "$_si_phentsize" -ge $(($6 + $2)) ] || return 0
	_si_i=0
	while [ "$_si_i" -lt "$_si_phnum" ]; do
		_si_ph=$((_si_phoff + _si_i * _si_phentsize))
		_si_i=$((_si_i + 1))
		[ "$(switchroot_uint "$_si_file" "$_si_ph" 4)" = 3 ] || continue # PT_INTERP
		_si_offset=$(switchroot_uint "$_si_file" $((_si_ph + $5)) "$2") &&
			_si_filesz=$(switchroot_uint "$_si_file" $((_si_ph + $6)) "$2") || return 0
		[ "$_si_offset" -ge 0 ] && [ "$_si_filesz" -ge 2 ] && [ "$_si_filesz" -le 4096 ] || return 0
		echo "elf $(dd if="$_si_file" bs=1 skip="$_si_offset" count="$_si_filesz" 2>/dev/null | tr -d '\000')"
		return 0
	done
}

# switchroot_libraries LOADER PROG: the shared libraries PROG needs (DT_NEEDED, and theirs)
# as the image's LOADER finds them, run in the new root with --list (glibc's and musl's
# loaders know it: they map the libraries and run none of their code; the image's init runs
# next anyway). Prints the loader's reason for a library it cannot load and returns 1.
# Whatever else happens (no chroot, a loader that cannot run here or knows no --list) is not
# a verdict on the libraries: 0, and the boot goes on as before.
switchroot_libraries() {
	switchroot_missing_library "$(LD_LIBRARY_PATH='' LD_PRELOAD='' chroot "$ONEROOT_NEWROOT" "$1" --list "$2" 2>&1)"
}

# switchroot_missing_library TEXT: the first library a loader's TEXT says it cannot load,
# with its reason ("libc.so.6: cannot open shared object file: ..."); returns 1 if there is one.
switchroot_missing_library() {
	while IFS= read -r _sl_line; do
		case $_sl_line in
		*'error while loading shared libraries: '*) # glibc
			echo "${_sl_line#*error while loading shared libraries: }" ;;
		*' => not found') # glibc, as ldd prints it
			_sl_line=${_sl_line%% => not found}
			echo "${_sl_line#"${_sl_line%%[! 	]*}"}: not found" ;;
		'Error loading shared library '*) echo "${_sl_line#Error loading shared library }" ;; # musl
		*) continue ;;
		esac
		return 1
	done <<EOF
$1
EOF
	return 0
}

# switchroot_check_interpreters SAID PATH: what the kernel loads to run PATH (resolved, inside
# the new root) leads to an executable file, through `#!` programs (at most 4 levels) to an ELF
# interpreter, which finds the shared libraries of the program it loads. Prints why not (SAID
# starts the sentence) and returns 1 (an interpreter) or 2 (a library).
switchroot_check_interpreters() {
	_sx_said=$1
	_sx_path=$2
	_sx_depth=0
	while _sx_next=$(switchroot_interp "$ONEROOT_NEWROOT$_sx_path") && [ -n "$_sx_next" ]; do
		_sx_prog=$_sx_path
		[ "$_sx_depth" -lt 4 ] || return 0 # the kernel refuses deeper (ELOOP), not a panic here
		_sx_depth=$((_sx_depth + 1))
		_sx_kind=${_sx_next%% *}
		_sx_interp=${_sx_next#* }
		case $_sx_kind in
		elf) _sx_said="$_sx_said, whose ELF interpreter $_sx_interp" ;;
		*) _sx_said="$_sx_said, whose #! interpreter $_sx_interp" ;;
		esac
		if ! _sx_path=$(switchroot_resolve "$_sx_interp"); then
			echo "$_sx_said does not resolve: $_sx_path"
			return 1
		fi
		[ "$_sx_path" = "$_sx_interp" ] || _sx_said="$_sx_said leads to $_sx_path"
		if [ ! -f "$ONEROOT_NEWROOT$_sx_path" ] || [ ! -x "$ONEROOT_NEWROOT$_sx_path" ]; then
			echo "$_sx_said, which is not an executable file"
			return 1
		fi
		[ "$_sx_kind" = elf ] || continue
		if ! _sx_why=$(switchroot_libraries "$_sx_interp" "$_sx_prog"); then
			echo "$_sx_said, which cannot load a shared library of $_sx_prog: $_sx_why"
			return 2
		fi
		return 0 # the kernel never reads the loader's own PT_INTERP
	done
	return 0
}

# switchroot_check_init: the image's init leads to an executable file, and so do the
# interpreters it needs; the mount points exist.
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
	_sc_said="the root's init $ONEROOT_INIT"
	[ "$_sc_init" = "$ONEROOT_INIT" ] || _sc_said="$_sc_said leads to $_sc_init"
	_sc_why=$(switchroot_check_interpreters "$_sc_said" "$_sc_init")
	case $? in
	0) ;;
	2)
		oneroot_fail "$_sc_why" \
			"the image lacks that library (install its package in the image; libc.so.6 is libc6), or a link such as /lib -> usr/lib was replaced by a directory: look for it in the image and in the node's layers on the server, or give init=PATH"
		return 1
		;;
	*)
		oneroot_fail "$_sc_why" \
			"the image lacks that program (for the ELF interpreter: its C library, libc6), or a link such as /lib64 -> usr/lib64 was replaced by a directory: look at that path in the image and in the node's layers on the server, or give init=PATH"
		return 1
		;;
	esac
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
