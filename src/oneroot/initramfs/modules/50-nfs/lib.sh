#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 50-nfs/lib.sh: mount each NFS layer of root= at $ONEROOT_RUN/layers/<i> (1 = bottom).
#
# busybox-static has no NFS mount helper: `mount -t nfs` hands the option text to mount(2) and
# the kernel parses it. The kernel needs the server's address in addr= (it resolves nothing),
# so names are resolved first (20-net's net_resolve). The options, in this order:
#   <mode>                      ro or rw, from root=
#   vers=4.2                    unless root= gives vers= or nfsvers=
#   <the layer's own options>   from root=, in order
#   nolock                      for vers=2/3 unless root= says lock, nolock or local_lock=
#                               (no rpc.statd in the initramfs)
#   addr=<server IP>            unless given
#   clientaddr=<our IP>         for vers=4.x, unless given (the NFSv4.0 callback address)
# Each mount is tried oneroot.nfs.tries= times with 1, 2, 4... s in between.
# A layer with loop=erofs|ext4 (root=, union=block) names an image file: its directory is
# mounted over NFS at $ONEROOT_RUN/nfs/<i> (loop= is not an NFS option), then the file is
# loop-mounted at $ONEROOT_RUN/layers/<i> (`mount -t FS -o MODE,loop`).

# nfs_vers OPTS: the vers= / nfsvers= value of a comma list (the last one), or nothing.
nfs_vers() {
	_nv=''
	_nv_rest=$1,
	while [ -n "$_nv_rest" ]; do
		_nv_o=${_nv_rest%%,*}
		_nv_rest=${_nv_rest#*,}
		case $_nv_o in
		vers=* | nfsvers=*) _nv=${_nv_o#*=} ;;
		esac
	done
	printf '%s\n' "$_nv"
}

# nfs_options MODE OPTS SERVER_IP CLIENT_IP: prints the option text for mount -o.
nfs_options() {
	_no=$1
	_no_vers=$(nfs_vers "$2")
	if [ -z "$_no_vers" ]; then
		_no="$_no,vers=4.2"
		_no_vers=4.2
	fi
	if [ -n "$2" ]; then
		_no="$_no,$2"
	fi
	case $_no_vers in
	2 | 3 | 2.* | 3.*)
		case ",$2," in
		*,lock,* | *,nolock,* | *,local_lock=*) ;;
		*) _no="$_no,nolock" ;;
		esac
		;;
	esac
	case ",$2," in
	*,addr=*) ;;
	*) _no="$_no,addr=$3" ;;
	esac
	case $_no_vers in
	4*)
		case ",$2," in
		*,clientaddr=*) ;;
		*) [ -z "$4" ] || _no="$_no,clientaddr=$4" ;;
		esac
		;;
	esac
	printf '%s\n' "$_no"
}

# nfs_source IP PATH: SERVER:/PATH as mount takes it ([v6]:/path).
nfs_source() {
	case $1 in
	*:*) printf '[%s]:%s\n' "$1" "$2" ;;
	*) printf '%s:%s\n' "$1" "$2" ;;
	esac
}

# nfs_mount_layer I: mount layer I (an NFS layer) at $ONEROOT_RUN/layers/I.
nfs_mount_layer() {
	_nm_server='' _nm_path='' _nm_mode='' _nm_opts=''
	eval "_nm_server=\$ROOTSPEC_${1}_SERVER _nm_path=\$ROOTSPEC_${1}_PATH"
	eval "_nm_mode=\$ROOTSPEC_${1}_MODE _nm_opts=\$ROOTSPEC_${1}_OPTS"
	if ! _nm_ip=$(net_resolve "$_nm_server"); then
		oneroot_fail "cannot resolve the NFS server name '$_nm_server' (layer $1)" \
			"give the server's address in root=, or have DHCP hand out a DNS server that knows it (DNS now: ${ONEROOT_NET_DNS:-none})"
		return 1
	fi
	_nm_loop=''
	eval "_nm_loop=\$ROOTSPEC_${1}_LOOP"
	_nm_dir=$ONEROOT_RUN/layers/$1
	_nm_file=''
	if [ -n "$_nm_loop" ]; then
		_nm_file=${_nm_path##*/}
		_nm_path=${_nm_path%/*}
		_nm_path=${_nm_path:-/}
		_nm_opts=$(nfs_without_loop "$_nm_opts")
		_nm_dir=$ONEROOT_RUN/nfs/$1
	fi
	_nm_src=$(nfs_source "$_nm_ip" "$_nm_path")
	_nm_o=$(nfs_options "$_nm_mode" "$_nm_opts" "$_nm_ip" "${ONEROOT_NET_IP-}")
	oneroot_run mkdir -p "$_nm_dir"
	oneroot_log "layer $1: mount -t nfs -o $_nm_o $_nm_src"
	if ! oneroot_retry "$ONEROOT_NFS_TRIES" "NFS mount of $_nm_src" \
		oneroot_run mount -t nfs -o "$_nm_o" "$_nm_src" "$_nm_dir"; then
		oneroot_fail "cannot mount layer $1 ($_nm_server:$_nm_path): $ONEROOT_LAST_ERROR" \
			"check that the server exports $_nm_path to this node (\`oneroot nfs status\`, \`showmount -e $_nm_server\` for NFSv3) and that the NFS server runs"
		return 1
	fi
	if [ -n "$_nm_loop" ]; then
		nfs_loop_mount "$1" "$_nm_loop" "$_nm_mode" "$_nm_dir/$_nm_file" || return 1
	fi
	return 0
}

# nfs_without_loop OPTS: the comma list without its loop= option.
nfs_without_loop() {
	_nw=''
	_nw_rest=${1:+$1,}
	while [ -n "$_nw_rest" ]; do
		_nw_o=${_nw_rest%%,*}
		_nw_rest=${_nw_rest#*,}
		case $_nw_o in
		loop=*) ;;
		*) _nw="$_nw${_nw:+,}$_nw_o" ;;
		esac
	done
	printf '%s\n' "$_nw"
}

# nfs_loop_mount I FS MODE FILE: the image file of layer I, loop-mounted at layers/I.
nfs_loop_mount() {
	_nl_to=$ONEROOT_RUN/layers/$1
	oneroot_run mkdir -p "$_nl_to"
	oneroot_log "layer $1: mount -t $2 -o $3,loop $4"
	if [ ! -f "$4" ]; then
		oneroot_fail "layer $1: no image file $4 on the server" \
			"build it on the server: \`oneroot image block IMAGE\` (EROFS) or \`oneroot nfs apply\` (the node's top.ext4)"
		return 1
	fi
	oneroot_run mount -t "$2" -o "$3,loop" "$4" "$_nl_to" 2>"$ONEROOT_RUN/last.err" || {
		oneroot_fail "cannot loop-mount layer $1 ($4 as $2): $(tail -n 1 "$ONEROOT_RUN/last.err")" \
			"check that the $2 and loop modules loaded (lsmod) and \`dmesg\` for why $2 refused the file"
		return 1
	}
	return 0
}

# nfs_mount_layers: the second hook of the layers stage.
nfs_mount_layers() {
	_nl_i=1
	_nl_n=0
	while [ "$_nl_i" -le "$ROOTSPEC_COUNT" ]; do
		_nl_type=''
		eval "_nl_type=\$ROOTSPEC_${_nl_i}_TYPE"
		if [ "$_nl_type" = nfs ]; then
			nfs_mount_layer "$_nl_i" || return 1
			_nl_n=$((_nl_n + 1))
		fi
		_nl_i=$((_nl_i + 1))
	done
	ONEROOT_STAGE_MESSAGE="$_nl_n NFS layers mounted ($ROOTSPEC_CANONICAL)"
	return 0
}
