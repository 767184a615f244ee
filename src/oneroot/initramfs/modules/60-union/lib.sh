#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 60-union/lib.sh: stack the mounted layers on $ONEROOT_NEWROOT (/sysroot).
#
# Layer i is at $ONEROOT_RUN/layers/i (1 = bottom, N = top). The plans (union_plan):
#   direct    one NFS layer, nothing on top: it is moved to /sysroot as mounted (ro or rw)
#   overlay   N >= 2, top is a tmpfs: kernel overlayfs with lowerdir=<N-1>:...:<1> (topmost
#             first), upperdir/workdir on that tmpfs (its size=, nr_inodes= as given; mode=
#             becomes the mode of the union's root). Whiteouts are `c 0 0` devices.
#   block     N >= 2, top an rw ext4 image file (loop=ext4, union=block): kernel overlayfs,
#             lowerdir=<N-1>:...:<1>, upperdir/workdir = upper/ and work/ in that ext4 (a
#             local filesystem on a loop device, so overlayfs takes it as upper)
#   readonly  N >= 2, all NFS, top ro: kernel overlayfs of lowerdir=<N>:...:<1>, no upper
#   fuse      N >= 2, top an rw NFS layer: kernel overlayfs refuses an NFS upper (DESIGN §3), so
#             fuse-overlayfs, lowerdir=<N-1>:...:<1>, upperdir=<N>/upper, workdir=<N>/work,
#             -o allow_other,dev,suid,fast_ino=1 (+ oneroot.fuse.opts=); started as
#             `@fuse-overlayfs` so systemd's final kill spares it, and /proc stays mounted for it
#             through switch_root (80-switchroot). fast_ino=1: inode numbers from readdir's
#             d_ino instead of an open + fstat + origin xattr per entry and layer, which cost
#             an NFS OPEN and CLOSE per file (cold `find /usr` 23.2 s -> 16.8 s, see
#             bench/results/union.md); a copied-up file then shows its upper inode number.
# A tmpfs alone is refused: there is no image to boot.
#
# oneroot.union.lowerxattrs=off (the server sets it for nfs_server=ganesha-ceph): the overlay,
# block and fuse plans take as their one lowerdir a read-only fuse-overlayfs of the lower layers
# with noxattrs=1 (at $ONEROOT_RUN/lower, started as `@fuse-overlayfs` too), which lists no
# xattrs. Why: copy-up (fuse-overlayfs and kernel overlayfs alike) copies every xattr the lower
# file lists and fails if one cannot be read. nfs-ganesha's FSAL_CEPH (4.3) advertises the
# NFSv4 ACL attribute but returns none for a file without a POSIX ACL, so the Linux NFS client
# lists `system.nfs4_acl` on every file and reading it gives EOPNOTSUPP: every write through the
# union that copies a file or directory up fails with EOPNOTSUPP (measured, docs/ceph.md).

# union_plan: sets UNION_PLAN.
union_plan() {
	_up_top='' _up_mode='' _up_loop=''
	eval "_up_top=\$ROOTSPEC_${ROOTSPEC_COUNT}_TYPE _up_mode=\$ROOTSPEC_${ROOTSPEC_COUNT}_MODE"
	eval "_up_loop=\${ROOTSPEC_${ROOTSPEC_COUNT}_LOOP-}"
	if [ "$ROOTSPEC_COUNT" -eq 1 ]; then
		if [ "$_up_top" = tmpfs ]; then
			UNION_PLAN=''
			return 1
		fi
		UNION_PLAN=direct
	elif [ "$_up_top" = tmpfs ]; then
		UNION_PLAN=overlay
	elif [ "$_up_mode" = rw ] && [ "$_up_loop" = ext4 ]; then
		UNION_PLAN=block
	elif [ "$_up_mode" = rw ]; then
		UNION_PLAN=fuse
	else
		UNION_PLAN='readonly'
	fi
	return 0
}

# union_layer_dir I: the directory holding layer I's files. A node's diff-overlay directory
# (it holds upper/ and work/) keeps its files in upper/: so the seed's `...;ro;tmpfs` line,
# which names the node's directory, shows the node's files. Other layers are used as mounted.
union_layer_dir() {
	_ld=$ONEROOT_RUN/layers/$1
	if [ -d "$_ld/upper" ] && [ -d "$_ld/work" ]; then
		_ld=$_ld/upper
	fi
	printf '%s\n' "$_ld"
}

# union_lowerdir FROM: "<layers/FROM>:...:<layers/1>" (the topmost lower first).
union_lowerdir() {
	_ul=''
	_ul_i=$1
	while [ "$_ul_i" -ge 1 ]; do
		_ul="$_ul${_ul:+:}$(union_layer_dir "$_ul_i")"
		_ul_i=$((_ul_i - 1))
	done
	printf '%s\n' "$_ul"
}

# union_overlay_options: the -o text for the plan (overlay, readonly or fuse). The lowerdir
# of overlay, block and fuse is $UNION_LOWER if set (union_lower_filter), else the lower layers.
union_overlay_options() {
	_uo_top=$ONEROOT_RUN/layers/$ROOTSPEC_COUNT
	_uo_lower=${UNION_LOWER:-$(union_lowerdir $((ROOTSPEC_COUNT - 1)))}
	case $UNION_PLAN in
	readonly)
		printf 'lowerdir=%s\n' "$(union_lowerdir "$ROOTSPEC_COUNT")"
		;;
	overlay | block)
		printf 'lowerdir=%s,upperdir=%s/upper,workdir=%s/work\n' \
			"$_uo_lower" "$_uo_top" "$_uo_top"
		;;
	fuse)
		printf 'lowerdir=%s,upperdir=%s/upper,workdir=%s/work,allow_other,dev,suid,fast_ino=1%s\n' \
			"$_uo_lower" "$_uo_top" "$_uo_top" "${ONEROOT_FUSE_OPTS:+,$ONEROOT_FUSE_OPTS}"
		;;
	esac
}

# union_lower_filter: with oneroot.union.lowerxattrs=off, the lower layers as one read-only
# fuse-overlayfs that lists no xattrs (noxattrs=1) at $ONEROOT_RUN/lower; sets UNION_LOWER and
# ONEROOT_FUSE (its daemon, like the union's, outlives switch_root). Nothing otherwise.
union_lower_filter() {
	UNION_LOWER=''
	[ "${ONEROOT_LOWER_XATTRS-on}" = off ] || return 0
	_lf_o="lowerdir=$(union_lowerdir $((ROOTSPEC_COUNT - 1))),noxattrs=1,fast_ino=1"
	oneroot_run mkdir -p "$ONEROOT_RUN/lower"
	oneroot_log "union: @fuse-overlayfs -o $_lf_o $ONEROOT_RUN/lower (no xattrs for copy-up)"
	oneroot_run @fuse-overlayfs -o "$_lf_o" "$ONEROOT_RUN/lower" 2>"$ONEROOT_RUN/last.err" || {
		oneroot_fail "fuse-overlayfs (the lower layers without xattrs) failed: $(tail -n 1 "$ONEROOT_RUN/last.err")" \
			"check that the fuse module loaded (lsmod); or boot without oneroot.union.lowerxattrs=off"
		return 1
	}
	UNION_LOWER=$ONEROOT_RUN/lower
	ONEROOT_FUSE=1
	return 0
}

# union_tmpfs_options OPTS: the tmpfs mount options and UNION_ROOT_MODE (from mode=).
union_tmpfs_options() {
	UNION_ROOT_MODE=0755
	_ut=mode=0755
	_ut_rest=${1:+$1,}
	while [ -n "$_ut_rest" ]; do
		_ut_o=${_ut_rest%%,*}
		_ut_rest=${_ut_rest#*,}
		case $_ut_o in
		mode=*) UNION_ROOT_MODE=${_ut_o#mode=} ;;
		*) _ut="$_ut,$_ut_o" ;;
		esac
	done
	UNION_TMPFS_OPTIONS=$_ut
}

# union_assemble: the union stage.
union_assemble() {
	if ! union_plan; then
		oneroot_fail "root= has only a tmpfs: there is no image to boot" \
			"put the image's NFS layer below the tmpfs, e.g. root=SERVER:/srv/image:ro;tmpfs"
		return 1
	fi
	_ua_top=$ONEROOT_RUN/layers/$ROOTSPEC_COUNT
	ONEROOT_FUSE=''
	case $UNION_PLAN in
	direct)
		oneroot_run mount --move "$_ua_top" "$ONEROOT_NEWROOT" || {
			oneroot_fail "cannot move the root layer to $ONEROOT_NEWROOT" \
				"see the kernel log (dmesg) for the reason"
			return 1
		}
		_ua_mode=''
		eval "_ua_mode=\$ROOTSPEC_${ROOTSPEC_COUNT}_MODE"
		ONEROOT_STAGE_MESSAGE="one NFS layer ($_ua_mode), no union"
		;;
	overlay)
		_ua_topts=''
		eval "_ua_topts=\$ROOTSPEC_${ROOTSPEC_COUNT}_OPTS"
		union_tmpfs_options "$_ua_topts"
		oneroot_run mkdir -p "$_ua_top"
		oneroot_run mount -t tmpfs -o "$UNION_TMPFS_OPTIONS" tmpfs "$_ua_top" || {
			oneroot_fail "cannot mount the tmpfs top layer (-o $UNION_TMPFS_OPTIONS)" \
				"check the tmpfs options in root= (size=, nr_inodes=, mode=)"
			return 1
		}
		oneroot_run mkdir -m "$UNION_ROOT_MODE" "$_ua_top/upper"
		oneroot_run mkdir "$_ua_top/work"
		union_lower_filter || return 1
		union_mount_overlay || return 1
		ONEROOT_STAGE_MESSAGE="overlayfs: $((ROOTSPEC_COUNT - 1)) NFS layers + tmpfs"
		;;
	readonly)
		union_mount_overlay || return 1
		ONEROOT_STAGE_MESSAGE="overlayfs: $ROOTSPEC_COUNT NFS layers, read-only"
		;;
	block)
		oneroot_run mkdir -p "$_ua_top/upper" "$_ua_top/work" || {
			oneroot_fail "cannot create upper/ and work/ in the node's ext4 file" \
				"reset it on the server: \`oneroot overlay reset NODE\` while the node is off"
			return 1
		}
		union_lower_filter || return 1
		union_mount_overlay || return 1
		ONEROOT_STAGE_MESSAGE="overlayfs: $((ROOTSPEC_COUNT - 1)) layers + ext4 top (union=block)"
		;;
	fuse)
		case ",$ONEROOT_FUSE_OPTS," in
		*,lowerdir=* | *,upperdir=* | *,workdir=*)
			oneroot_fail "oneroot.fuse.opts sets a layer directory ($ONEROOT_FUSE_OPTS)" \
				"root= sets the layers: keep only options such as static_nlink or noacl"
			return 1
			;;
		esac
		oneroot_run mkdir -p "$_ua_top/upper" "$_ua_top/work" || {
			oneroot_fail "cannot create upper/ and work/ in the rw layer" \
				"the node's directory must be exported rw to this node with no_root_squash"
			return 1
		}
		union_lower_filter || return 1
		_ua_o=$(union_overlay_options)
		oneroot_log "union: @fuse-overlayfs -o $_ua_o $ONEROOT_NEWROOT"
		# argv[0] starting with "@": systemd's shutdown kill spares the process (the root's
		# daemon must outlive every other process).
		oneroot_run @fuse-overlayfs -o "$_ua_o" "$ONEROOT_NEWROOT" 2>"$ONEROOT_RUN/last.err" || {
			oneroot_fail "fuse-overlayfs failed: $(tail -n 1 "$ONEROOT_RUN/last.err")" \
				"check that the fuse module loaded (lsmod) and that upper/ and work/ of the rw layer are writable"
			return 1
		}
		ONEROOT_FUSE=1
		ONEROOT_STAGE_MESSAGE="fuse-overlayfs: $((ROOTSPEC_COUNT - 1)) NFS layers + rw NFS top"
		;;
	esac
	return 0
}

union_mount_overlay() {
	_um_o=$(union_overlay_options)
	oneroot_log "union: mount -t overlay -o $_um_o overlay $ONEROOT_NEWROOT"
	oneroot_run mount -t overlay -o "$_um_o" overlay "$ONEROOT_NEWROOT" 2>"$ONEROOT_RUN/last.err" || {
		oneroot_fail "overlayfs refused the layers: $(tail -n 1 "$ONEROOT_RUN/last.err")" \
			"check that the overlay module loaded (lsmod) and \`dmesg | grep overlayfs\` for the layer it rejects"
		return 1
	}
	return 0
}
