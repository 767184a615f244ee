#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 90-report/lib.sh: tell `oneroot serve` how far the boot got.
#
# oneroot_report STAGE STATUS MESSAGE POSTs the form
#   stage=<dhcp|layers|union|switch_root|failed>&status=<ok|failed>&message=<text>
# to oneroot.status= (busybox wget, 5 s per try, REPORT_TRIES tries 1 and 2 s apart; best
# effort: a report that does not arrive never stops the boot). A 4xx answer is final; the
# server records a report sent again (its answer was lost) once. The server knows the node by
# its source address. A host name in the URL is resolved with the DHCP's DNS first (no libc
# resolver in a static busybox).

REPORT_TRIES=3

# report_urlencode TEXT: application/x-www-form-urlencoded.
report_urlencode() {
	_re_in=$1
	_re_out=''
	while [ -n "$_re_in" ]; do
		_re_rest=${_re_in#?}
		_re_c=${_re_in%"$_re_rest"}
		_re_in=$_re_rest
		case $_re_c in
		[A-Za-z0-9._~-]) _re_out="$_re_out$_re_c" ;;
		' ') _re_out="$_re_out+" ;;
		*) _re_out="$_re_out$(printf '%%%02X' "'$_re_c")" ;;
		esac
	done
	printf '%s\n' "$_re_out"
}

# report_url URL: URL with its host replaced by its address (when it resolves).
report_url() {
	case $1 in
	http://*) ;;
	*)
		printf '%s\n' "$1"
		return 0
		;;
	esac
	_ru_rest=${1#http://}
	_ru_hostport=${_ru_rest%%/*}
	_ru_path=${_ru_rest#"$_ru_hostport"}
	case $_ru_hostport in
	\[*) _ru_host=$_ru_hostport _ru_port='' ;;
	*:*) _ru_host=${_ru_hostport%%:*} _ru_port=:${_ru_hostport#*:} ;;
	*) _ru_host=$_ru_hostport _ru_port='' ;;
	esac
	if _ru_ip=$(net_resolve "$_ru_host" 2>/dev/null) && [ -n "$_ru_ip" ]; then
		_ru_host=$_ru_ip
	fi
	printf 'http://%s%s%s\n' "$_ru_host" "$_ru_port" "$_ru_path"
}

# report_post DATA URL: one try; fails unless the server answered (a 4xx answer is final:
# it is kept in _rp_refused).
report_post() {
	if oneroot_run timeout 5 wget -q -O /dev/null --post-data "$1" "$2" \
		2>"$ONEROOT_RUN/report.err"; then
		return 0
	fi
	_rpp_err=''
	while IFS= read -r _rpp_line; do
		_rpp_err="$_rpp_err${_rpp_err:+ }$_rpp_line"
	done <"$ONEROOT_RUN/report.err"
	case $_rpp_err in
	*"server returned error: HTTP/1."?" 4"*)
		_rp_refused=$_rpp_err
		return 0
		;;
	esac
	printf '%s\n' "${_rpp_err:-no answer}" >&2
	return 1
}

oneroot_report() {
	[ -n "${ONEROOT_STATUS-}" ] || return 0
	if [ -z "$ONEROOT_DRYRUN" ] && [ -z "${ONEROOT_NET_IP-}" ]; then
		return 0
	fi
	_rp_data="stage=$(report_urlencode "$1")&status=$(report_urlencode "$2")&message=$(report_urlencode "${3-}")"
	_rp_refused=''
	# `timeout`, not wget -T: busybox-static 1.35's wget segfaults with -T.
	if ! oneroot_retry "$REPORT_TRIES" "report of stage $1" report_post "$_rp_data" \
		"$(report_url "$ONEROOT_STATUS")"; then
		oneroot_log "report of stage $1 did not reach $ONEROOT_STATUS"
	elif [ -n "$_rp_refused" ]; then
		oneroot_log "report of stage $1 refused: $_rp_refused"
	fi
	return 0
}
