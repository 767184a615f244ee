#!/bin/sh
# shellcheck shell=sh
# parse-root.sh: the root= grammar in the initramfs, the twin of oneroot.rootspec.parser.
# Same grammar, same error messages, same carets: one corpus (tests/data/rootspec) runs on both.
#
#   spec    = token *( ";" token )            layers bottom-most first
#   token   = nfs | tmpfs | attrs             attrs applies to the layer just before it
#   nfs     = server ":" path [ ":" list ]
#   tmpfs   = "tmpfs" [ ":" list ]
#   attrs   = ( "ro" | "rw" ) [ "," list ]    a standalone token must start with its mode
#   list    = attr *( "," attr )
#   attr    = "ro" | "rw" | key [ "=" value ]
#   server  = hostname | ipv4 | "[" ipv6 "]"
#   path    = "/" | 1*( "/" segment )        no empty, "." or ".." segments, no trailing "/"
#
#   hostname  labels of 1-63 of A-Z a-z 0-9 "-", not starting or ending with "-"
#   ipv4      four decimal octets 0-255 (a server of only digits and dots must be one)
#   ipv6      hex digits, ":" and ".", at least two ":", at most one "::"
#   segment   A-Z a-z 0-9 and . _ - + @ = ~ %
#   key       A-Z a-z 0-9 _ -            value: A-Z a-z 0-9 and . _ - + % @ ~
#
# Tokens are classified in this order: `tmpfs`/`tmpfs:...` is a tmpfs; `ro`, `rw`, `ro,...`,
# `rw,...` is an attribute token; anything else with a `:` is an NFS layer; the rest is unknown.
# Modes default to rw for the topmost layer, ro for all others; only the topmost may be rw; a
# tmpfs may only be the topmost layer and is never ro; tmpfs takes size=, nr_inodes=, mode=
# (each once, with a value). `loop=erofs|ext4` (once, not for `/`) on an NFS layer: its path is
# an image file, loop-mounted (an erofs layer is never rw). Every other option is an NFS mount
# option, passed through in order.
#
# Use:  . parse-root.sh; rootspec_parse "$root" || die "bad root="
#   On success sets ROOTSPEC_COUNT=N, ROOTSPEC_CANONICAL, and for i in 1..N (1 = bottom):
#   ROOTSPEC_i_TYPE (nfs|tmpfs), ROOTSPEC_i_SERVER (IPv6 without brackets), ROOTSPEC_i_PATH,
#   ROOTSPEC_i_MODE (ro|rw), ROOTSPEC_i_OPTS (comma list without the mode; tmpfs: size first),
#   ROOTSPEC_i_LOOP (erofs, ext4 or empty: the loop= of an NFS layer, also kept in OPTS).
#   On error prints the message, the spec, a caret line and `hint: ...` to stderr, returns 1.
# As a program (tests): sh parse-root.sh --print SPEC   one line per layer, top to bottom
#                       sh parse-root.sh --format SPEC  the canonical spec

# Layer fields live in ROOTSPEC_<i>_<FIELD> (public) and _rs_L<i>_<FIELD> (parser state).
_rs_set() { eval "$1=\$2"; }
_rs_get() { eval "_rs_v=\${$1-}"; }

# _rs_fail MESSAGE START END HINT: an empty span marks the delimiter just before it.
_rs_fail() {
	_rs_fs=$2
	_rs_fe=$3
	if [ "$_rs_fe" -le "$_rs_fs" ]; then
		if [ "$_rs_fs" -gt 0 ]; then
			_rs_fs=$((_rs_fs - 1))
		fi
		_rs_fe=$((_rs_fs + 1))
	fi
	_rs_caret=''
	_rs_fi=0
	while [ "$_rs_fi" -lt "$_rs_fe" ]; do
		if [ "$_rs_fi" -lt "$_rs_fs" ]; then
			_rs_caret="$_rs_caret "
		else
			_rs_caret="$_rs_caret^"
		fi
		_rs_fi=$((_rs_fi + 1))
	done
	printf '%s\n%s\n%s\nhint: %s\n' "$1" "$_rs_text" "$_rs_caret" "$4" >&2
	ROOTSPEC_COUNT=0
	return 1
}

# _rs_first_bad STRING CLASS: sets _rs_i to the index of the first character outside CLASS
# (spec|path|key|value) and _rs_c to it, or _rs_i=-1.
_rs_first_bad() {
	_rs_bs=$1
	_rs_i=0
	while [ -n "$_rs_bs" ]; do
		_rs_br=${_rs_bs#?}
		_rs_c=${_rs_bs%"$_rs_br"}
		case $_rs_c in
		[A-Za-z0-9]) ;;
		*)
			case $2:$_rs_c in
			spec:[';:,/._+@=~%-'] | spec:'[' | spec:']') ;;
			path:['/._+@=~%-']) ;;
			key:['_-']) ;;
			value:['._+%@~-']) ;;
			*) return 0 ;;
			esac
			;;
		esac
		_rs_i=$((_rs_i + 1))
		_rs_bs=$_rs_br
	done
	_rs_i=-1
}

_rs_is_ipv6() {
	case $1 in
	'' | *[!0-9A-Fa-f:.]* | *:::* | *::*::*) return 1 ;;
	*:*:*) return 0 ;;
	esac
	return 1
}

_rs_is_host() {
	_rs_hr=$1.
	_rs_hn=0
	case $1 in
	*[!0-9.]*)
		while [ -n "$_rs_hr" ]; do
			_rs_hl=${_rs_hr%%.*}
			_rs_hr=${_rs_hr#*.}
			case $_rs_hl in
			'' | -* | *- | *[!A-Za-z0-9-]*) return 1 ;;
			esac
			if [ "${#_rs_hl}" -gt 63 ]; then
				return 1
			fi
		done
		return 0
		;;
	esac
	while [ -n "$_rs_hr" ]; do
		_rs_hl=${_rs_hr%%.*}
		_rs_hr=${_rs_hr#*.}
		case $_rs_hl in
		'' | ????*) return 1 ;;
		esac
		if [ "$_rs_hl" -gt 255 ]; then
			return 1
		fi
		_rs_hn=$((_rs_hn + 1))
	done
	[ "$_rs_hn" -eq 4 ]
}

# _rs_new TYPE START END: a new topmost layer.
_rs_new() {
	_rs_n=$((_rs_n + 1))
	_rs_set "ROOTSPEC_${_rs_n}_TYPE" "$1"
	_rs_set "ROOTSPEC_${_rs_n}_SERVER" "${4-}"
	_rs_set "ROOTSPEC_${_rs_n}_PATH" "${5-}"
	_rs_set "ROOTSPEC_${_rs_n}_MODE" ''
	_rs_set "ROOTSPEC_${_rs_n}_OPTS" ''
	_rs_set "ROOTSPEC_${_rs_n}_LOOP" ''
	_rs_set "_rs_L${_rs_n}_START" "$2"
	_rs_set "_rs_L${_rs_n}_END" "$3"
	_rs_set "_rs_L${_rs_n}_MODE" ''
	_rs_set "_rs_L${_rs_n}_MSTART" 0
	_rs_set "_rs_L${_rs_n}_SIZE" ''
	_rs_set "_rs_L${_rs_n}_KEYS" ','
}

# _rs_option ATTR START: one key[=value] of the topmost layer.
_rs_option() {
	_rs_o=$1
	_rs_os=$2
	_rs_oe=$(($2 + ${#1}))
	_rs_key=${_rs_o%%=*}
	_rs_ok=1
	case $_rs_o in
	*=*)
		_rs_val=${_rs_o#*=}
		if [ -z "$_rs_val" ]; then
			_rs_ok=0
		fi
		_rs_first_bad "$_rs_val" value
		if [ "$_rs_i" -ge 0 ]; then
			_rs_ok=0
		fi
		_rs_eq=1
		;;
	*)
		_rs_val=''
		_rs_eq=0
		;;
	esac
	_rs_first_bad "$_rs_key" key
	if [ -z "$_rs_key" ] || [ "$_rs_i" -ge 0 ]; then
		_rs_ok=0
	fi
	if [ "$_rs_ok" = 0 ]; then
		_rs_fail "bad option '$_rs_o'" "$_rs_os" "$_rs_oe" \
			"options look like key or key=value (value: letters, digits and . _ - + % @ ~)"
		return 1
	fi
	_rs_get "ROOTSPEC_${_rs_n}_TYPE"
	if [ "$_rs_v" = nfs ]; then
		if [ "$_rs_key" = loop ]; then
			_rs_loop "$_rs_o" "$_rs_val" "$_rs_os" "$_rs_oe" || return 1
		fi
		_rs_get "ROOTSPEC_${_rs_n}_OPTS"
		_rs_set "ROOTSPEC_${_rs_n}_OPTS" "${_rs_v:+$_rs_v,}$_rs_o"
		return 0
	fi
	_rs_th="tmpfs takes size=, nr_inodes= and mode=, e.g. tmpfs:size=512m"
	case $_rs_key in
	size | nr_inodes | mode) ;;
	*)
		_rs_fail "unknown tmpfs option '$_rs_key'" "$_rs_os" "$_rs_oe" "$_rs_th"
		return 1
		;;
	esac
	if [ "$_rs_eq" = 0 ]; then
		_rs_fail "tmpfs option '$_rs_key' needs a value" "$_rs_os" "$_rs_oe" "$_rs_th"
		return 1
	fi
	_rs_get "_rs_L${_rs_n}_KEYS"
	case $_rs_v in
	*",$_rs_key,"*)
		_rs_fail "tmpfs option '$_rs_key' given twice" "$_rs_os" "$_rs_oe" \
			"give each tmpfs option once"
		return 1
		;;
	esac
	_rs_set "_rs_L${_rs_n}_KEYS" "$_rs_v$_rs_key,"
	if [ "$_rs_key" = size ]; then
		_rs_set "_rs_L${_rs_n}_SIZE" "$_rs_val"
	else
		_rs_get "ROOTSPEC_${_rs_n}_OPTS"
		_rs_set "ROOTSPEC_${_rs_n}_OPTS" "${_rs_v:+$_rs_v,}$_rs_o"
	fi
}

# _rs_loop ATTR VALUE START END: loop=erofs|ext4 of the topmost (an NFS) layer.
_rs_loop() {
	_rs_lh="loop= takes erofs (a read-only image file) or ext4 (a writable one), e.g. SERVER:/srv/blocks/lab@3.erofs:ro,loop=erofs"
	case $1 in
	loop=erofs | loop=ext4) ;;
	*)
		_rs_fail "loop= takes erofs or ext4, not '$1'" "$3" "$4" "$_rs_lh"
		return 1
		;;
	esac
	_rs_get "ROOTSPEC_${_rs_n}_LOOP"
	if [ -n "$_rs_v" ]; then
		_rs_fail "loop given twice" "$3" "$4" "give each layer one loop="
		return 1
	fi
	_rs_get "ROOTSPEC_${_rs_n}_PATH"
	if [ "$_rs_v" = / ]; then
		_rs_fail "loop= names an image file, not '/'" "$3" "$4" "$_rs_lh"
		return 1
	fi
	_rs_set "ROOTSPEC_${_rs_n}_LOOP" "$2"
}

# _rs_attrs LIST START: a comma list for the topmost layer.
_rs_attrs() {
	_rs_ar=$1
	_rs_ap=$2
	while :; do
		case $_rs_ar in
		*,*)
			_rs_a=${_rs_ar%%,*}
			_rs_ar=${_rs_ar#*,}
			_rs_am=1
			;;
		*)
			_rs_a=$_rs_ar
			_rs_am=0
			;;
		esac
		_rs_ae=$((_rs_ap + ${#_rs_a}))
		case $_rs_a in
		'')
			_rs_fail "empty option" "$_rs_ap" "$_rs_ap" "remove the extra ',' or ':'"
			return 1
			;;
		ro | rw)
			_rs_get "_rs_L${_rs_n}_MODE"
			if [ -n "$_rs_v" ]; then
				_rs_fail "two modes for one layer" "$_rs_ap" "$_rs_ae" \
					"give each layer one mode: ro or rw"
				return 1
			fi
			_rs_get "ROOTSPEC_${_rs_n}_TYPE"
			if [ "$_rs_v" = tmpfs ] && [ "$_rs_a" = ro ]; then
				_rs_fail "tmpfs cannot be read-only" "$_rs_ap" "$_rs_ae" \
					"a tmpfs is always the writable top; drop 'ro'"
				return 1
			fi
			_rs_set "_rs_L${_rs_n}_MODE" "$_rs_a"
			_rs_set "_rs_L${_rs_n}_MSTART" "$_rs_ap"
			;;
		*)
			_rs_option "$_rs_a" "$_rs_ap" || return 1
			;;
		esac
		if [ "$_rs_am" = 0 ]; then
			return 0
		fi
		_rs_ap=$((_rs_ae + 1))
	done
}

# _rs_check_path PATH START
_rs_check_path() {
	_rs_p=$1
	case $_rs_p in
	/*) ;;
	*)
		_rs_fail "path '$_rs_p' is not absolute" "$2" $(($2 + ${#_rs_p})) \
			"a layer is SERVER:/ABSOLUTE/PATH; write an IPv6 server in brackets: [fd00::1]:/PATH"
		return 1
		;;
	esac
	_rs_first_bad "$_rs_p" path
	if [ "$_rs_i" -ge 0 ]; then
		_rs_fail "invalid character '$_rs_c' in path" $(($2 + _rs_i)) $(($2 + _rs_i + 1)) \
			"path characters are letters, digits and / . _ - + @ = ~ %"
		return 1
	fi
	if [ "$_rs_p" = / ]; then
		return 0
	fi
	_rs_pr=${_rs_p#/}/
	_rs_po=1
	while [ -n "$_rs_pr" ]; do
		_rs_seg=${_rs_pr%%/*}
		_rs_pr=${_rs_pr#*/}
		case $_rs_seg in
		'')
			_rs_fail "empty path component" $(($2 + _rs_po - 1)) $(($2 + _rs_po)) \
				"remove the doubled or trailing '/'"
			return 1
			;;
		. | ..)
			_rs_fail "'$_rs_seg' component in path" $(($2 + _rs_po)) \
				$(($2 + _rs_po + ${#_rs_seg})) "write the path without '.' or '..' components"
			return 1
			;;
		esac
		_rs_po=$((_rs_po + ${#_rs_seg} + 1))
	done
}

# _rs_nfs TOKEN START
_rs_nfs() {
	_rs_nt=$1
	_rs_ns=$2
	_rs_sh="use a host name, an IPv4 address or a bracketed IPv6 address such as [fd00::1]"
	_rs_6h="write an IPv6 server in brackets: [fd00::1]:/PATH"
	case $_rs_nt in
	'['*)
		case $_rs_nt in
		*']'*) ;;
		*)
			_rs_fail "unclosed '[' in server" "$_rs_ns" $((_rs_ns + ${#_rs_nt})) "$_rs_6h"
			return 1
			;;
		esac
		_rs_srv=${_rs_nt%%"]"*}
		_rs_srv=${_rs_srv#"["}
		_rs_after=$((${#_rs_srv} + 2))
		_rs_nr=${_rs_nt#*"]"}
		case $_rs_nr in
		:*) ;;
		'')
			_rs_fail "expected ':' after ']'" $((_rs_ns + _rs_after)) $((_rs_ns + _rs_after)) \
				"$_rs_6h"
			return 1
			;;
		*)
			_rs_fail "expected ':' after ']'" $((_rs_ns + _rs_after)) \
				$((_rs_ns + _rs_after + 1)) "$_rs_6h"
			return 1
			;;
		esac
		_rs_nr=${_rs_nr#:}
		if ! _rs_is_ipv6 "$_rs_srv"; then
			_rs_fail "bad server '[$_rs_srv]'" "$_rs_ns" $((_rs_ns + _rs_after)) "$_rs_sh"
			return 1
		fi
		;;
	*)
		_rs_srv=${_rs_nt%%:*}
		_rs_after=${#_rs_srv}
		_rs_nr=${_rs_nt#*:}
		if [ -z "$_rs_srv" ]; then
			_rs_fail "missing server before ':'" "$_rs_ns" $((_rs_ns + 1)) "$_rs_sh"
			return 1
		fi
		if ! _rs_is_host "$_rs_srv"; then
			_rs_fail "bad server '$_rs_srv'" "$_rs_ns" $((_rs_ns + _rs_after)) "$_rs_sh"
			return 1
		fi
		;;
	esac
	_rs_rs=$((_rs_ns + _rs_after + 1))
	case $_rs_nr in
	*:*)
		_rs_path=${_rs_nr%%:*}
		_rs_list=${_rs_nr#*:}
		_rs_has=1
		;;
	*)
		_rs_path=$_rs_nr
		_rs_has=0
		;;
	esac
	_rs_check_path "$_rs_path" "$_rs_rs" || return 1
	_rs_new nfs "$_rs_ns" $((_rs_ns + ${#_rs_nt})) "$_rs_srv" "$_rs_path"
	if [ "$_rs_has" = 1 ]; then
		_rs_attrs "$_rs_list" $((_rs_rs + ${#_rs_path} + 1)) || return 1
	fi
	return 0
}

# _rs_token TOKEN START
_rs_token() {
	_rs_t=$1
	_rs_ts=$2
	_rs_te=$(($2 + ${#1}))
	case $_rs_t in
	'')
		_rs_fail "empty layer" "$_rs_ts" "$_rs_ts" "remove the extra ';'"
		return 1
		;;
	tmpfs | tmpfs:*)
		_rs_new tmpfs "$_rs_ts" "$_rs_te"
		if [ "$_rs_t" != tmpfs ]; then
			_rs_attrs "${_rs_t#tmpfs:}" $((_rs_ts + 6)) || return 1
		fi
		;;
	ro | rw | ro,* | rw,*)
		if [ "$_rs_n" -eq 0 ]; then
			_rs_fail "mode with no layer before it" "$_rs_ts" "$_rs_te" \
				"put the mode after a layer: SERVER:/PATH;ro or SERVER:/PATH:ro"
			return 1
		fi
		_rs_attrs "$_rs_t" "$_rs_ts" || return 1
		;;
	*:*)
		_rs_nfs "$_rs_t" "$_rs_ts" || return 1
		;;
	*)
		_rs_fail "unknown token '$_rs_t'" "$_rs_ts" "$_rs_te" \
			"a token is SERVER:/PATH[:OPTIONS], tmpfs[:OPTIONS], or ro|rw[,OPTIONS] for the layer before it"
		return 1
		;;
	esac
	return 0
}

# _rs_erofs_ro: layer _rs_k is an erofs file; refused when it is (or defaults to) rw.
_rs_erofs_ro() {
	if [ "$_rs_mode" = rw ]; then
		_rs_get "_rs_L${_rs_k}_MSTART"
		_rs_es=$_rs_v
		_rs_ee=$((_rs_v + 2))
	elif [ -z "$_rs_mode" ] && [ "$_rs_k" -eq "$_rs_n" ]; then
		_rs_get "_rs_L${_rs_k}_START"
		_rs_es=$_rs_v
		_rs_get "_rs_L${_rs_k}_END"
		_rs_ee=$_rs_v
	else
		return 0
	fi
	_rs_fail "an erofs image is read-only" "$_rs_es" "$_rs_ee" \
		"make it ro and put a writable layer on top (an ext4 file or a tmpfs)"
}

# Bottom to top: tmpfs or rw below the top; then defaults and the canonical text.
_rs_check_layers() {
	_rs_k=1
	ROOTSPEC_CANONICAL=''
	while [ "$_rs_k" -le "$_rs_n" ]; do
		_rs_get "ROOTSPEC_${_rs_k}_TYPE"
		_rs_type=$_rs_v
		_rs_get "_rs_L${_rs_k}_MODE"
		_rs_mode=$_rs_v
		if [ "$_rs_k" -lt "$_rs_n" ]; then
			if [ "$_rs_type" = tmpfs ]; then
				_rs_get "_rs_L${_rs_k}_START"
				_rs_s=$_rs_v
				_rs_get "_rs_L${_rs_k}_END"
				_rs_fail "tmpfs below the top layer" "$_rs_s" "$_rs_v" \
					"a tmpfs can only be the topmost (last) layer"
				return 1
			fi
			if [ "$_rs_mode" = rw ]; then
				_rs_get "_rs_L${_rs_k}_MSTART"
				_rs_fail "rw below the top layer" "$_rs_v" $((_rs_v + 2)) \
					"only the topmost (last) layer may be rw; make this one ro"
				return 1
			fi
		fi
		_rs_get "ROOTSPEC_${_rs_k}_LOOP"
		if [ "$_rs_v" = erofs ]; then
			_rs_erofs_ro || return 1
		fi
		_rs_get "ROOTSPEC_${_rs_k}_OPTS"
		_rs_opts=$_rs_v
		if [ "$_rs_type" = tmpfs ]; then
			_rs_get "_rs_L${_rs_k}_SIZE"
			if [ -n "$_rs_v" ]; then
				_rs_opts="size=$_rs_v${_rs_opts:+,$_rs_opts}"
				_rs_set "ROOTSPEC_${_rs_k}_OPTS" "$_rs_opts"
			fi
			_rs_mode=rw
			_rs_tok="tmpfs${_rs_opts:+:$_rs_opts}"
		else
			if [ -z "$_rs_mode" ]; then
				if [ "$_rs_k" -eq "$_rs_n" ]; then _rs_mode=rw; else _rs_mode=ro; fi
			fi
			_rs_get "ROOTSPEC_${_rs_k}_SERVER"
			case $_rs_v in *:*) _rs_v="[$_rs_v]" ;; esac
			_rs_src=$_rs_v
			_rs_get "ROOTSPEC_${_rs_k}_PATH"
			_rs_src="$_rs_src:$_rs_v"
			if [ "$_rs_k" -eq 1 ]; then _rs_sep=':'; else _rs_sep=';'; fi
			_rs_tok="$_rs_src$_rs_sep$_rs_mode${_rs_opts:+,$_rs_opts}"
		fi
		_rs_set "ROOTSPEC_${_rs_k}_MODE" "$_rs_mode"
		ROOTSPEC_CANONICAL="$ROOTSPEC_CANONICAL${ROOTSPEC_CANONICAL:+;}$_rs_tok"
		_rs_k=$((_rs_k + 1))
	done
	ROOTSPEC_COUNT=$_rs_n
}

# rootspec_parse SPEC: see the top of this file.
rootspec_parse() {
	_rs_text=$1
	_rs_n=0
	ROOTSPEC_COUNT=0
	ROOTSPEC_CANONICAL=''
	if [ -z "$_rs_text" ]; then
		_rs_fail "empty root= spec" 0 0 "write at least one layer, e.g. root=SERVER:/PATH"
		return 1
	fi
	_rs_first_bad "$_rs_text" spec
	if [ "$_rs_i" -ge 0 ]; then
		_rs_fail "invalid character '$_rs_c'" "$_rs_i" $((_rs_i + 1)) \
			"use letters, digits and ; : , / . _ - + @ = ~ % [ ]"
		return 1
	fi
	_rs_rest=$_rs_text
	_rs_pos=0
	while :; do
		case $_rs_rest in
		*";"*)
			_rs_tk=${_rs_rest%%";"*}
			_rs_rest=${_rs_rest#*";"}
			_rs_more=1
			;;
		*)
			_rs_tk=$_rs_rest
			_rs_more=0
			;;
		esac
		_rs_token "$_rs_tk" "$_rs_pos" || return 1
		if [ "$_rs_more" = 0 ]; then
			break
		fi
		_rs_pos=$((_rs_pos + ${#_rs_tk} + 1))
	done
	_rs_check_layers
}

# rootspec_print: the parsed layers top to bottom, as oneroot.rootspec.LayerRow.line() prints.
rootspec_print() {
	_rs_k=$ROOTSPEC_COUNT
	while [ "$_rs_k" -ge 1 ]; do
		if [ "$_rs_k" -eq "$ROOTSPEC_COUNT" ]; then
			_rs_where=top
		elif [ "$_rs_k" -eq 1 ]; then
			_rs_where=bottom
		else
			_rs_where=$_rs_k
		fi
		_rs_get "ROOTSPEC_${_rs_k}_TYPE"
		_rs_type=$_rs_v
		if [ "$_rs_type" = tmpfs ]; then
			_rs_src=tmpfs
		else
			_rs_get "ROOTSPEC_${_rs_k}_SERVER"
			case $_rs_v in *:*) _rs_v="[$_rs_v]" ;; esac
			_rs_src=$_rs_v
			_rs_get "ROOTSPEC_${_rs_k}_PATH"
			_rs_src="$_rs_src:$_rs_v"
		fi
		_rs_get "ROOTSPEC_${_rs_k}_MODE"
		_rs_mode=$_rs_v
		_rs_get "ROOTSPEC_${_rs_k}_OPTS"
		printf '%s %s %s %s %s\n' "$_rs_where" "$_rs_type" "$_rs_mode" "$_rs_src" "${_rs_v:--}"
		_rs_k=$((_rs_k - 1))
	done
}

case $0 in
*parse-root.sh)
	case ${1-} in
	--print)
		rootspec_parse "${2-}" || exit 1
		rootspec_print
		;;
	--format)
		rootspec_parse "${2-}" || exit 1
		printf '%s\n' "$ROOTSPEC_CANONICAL"
		;;
	*)
		printf 'usage: %s --print SPEC | --format SPEC\n' "$0" >&2
		exit 2
		;;
	esac
	;;
esac
