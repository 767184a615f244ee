#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 20-net/lib.sh: the network, from the kernel command line's ip= and BOOTIF=, and DNS.
#
# ip=dhcp (or on, any, both, or no ip= at all): wait up to 10 s for a NIC; BOOTIF= picks the
# one with that MAC, otherwise every Ethernet NIC is tried in name order. One round asks each NIC
# with `udhcpc -n -q -t 3 -T 2`; rounds repeat oneroot.dhcp.tries= times with 1, 2, 4... s in
# between. The lease is applied by udhcpc.script and read back from $ONEROOT_RUN/net.env.
# ip=off or ip=none: no network. Any other ip= form is refused with a hint.
# Names are resolved with busybox nslookup against the DHCP's DNS servers (a static busybox
# has no working libc resolver), so root= and oneroot.status= may name the server.

: "${ONEROOT_UDHCPC_SCRIPT:=$ONEROOT_LIB/udhcpc.script}"
: "${ONEROOT_NET_WAIT:=10}"

# net_candidates: sets NET_CANDIDATES to the Ethernet NICs (BOOTIF's only, if given).
net_candidates() {
	NET_CANDIDATES=''
	for _nc_dir in "$ONEROOT_SYSFS"/class/net/*; do
		[ -e "$_nc_dir/address" ] || continue
		_nc_name=${_nc_dir##*/}
		read -r _nc_type <"$_nc_dir/type" 2>/dev/null || _nc_type=''
		[ "$_nc_type" = 1 ] || continue
		read -r _nc_mac <"$_nc_dir/address" || _nc_mac=''
		if [ -n "$ONEROOT_BOOTIF" ] && [ "$_nc_mac" != "$ONEROOT_BOOTIF" ]; then
			continue
		fi
		NET_CANDIDATES="$NET_CANDIDATES${NET_CANDIDATES:+ }$_nc_name"
	done
}

# net_wait_candidates: poll for NICs for up to ONEROOT_NET_WAIT seconds.
net_wait_candidates() {
	_nw_left=$ONEROOT_NET_WAIT
	while :; do
		net_candidates
		if [ -n "$NET_CANDIDATES" ] || [ "$_nw_left" -le 0 ]; then
			break
		fi
		oneroot_run sleep 1
		_nw_left=$((_nw_left - 1))
	done
	[ -n "$NET_CANDIDATES" ]
}

# net_udhcpc IFACE: one DHCP exchange on IFACE; 0 once the lease is applied.
net_udhcpc() {
	oneroot_run ip link set dev "$1" up
	oneroot_run udhcpc -i "$1" -s "$ONEROOT_UDHCPC_SCRIPT" -n -q -t 3 -T 2 -V oneroot
}

net_load_lease() {
	[ -e "$ONEROOT_RUN/net.env" ] || return 1
	# shellcheck disable=SC1091 # written by udhcpc.script
	. "$ONEROOT_RUN/net.env"
}

# net_up: the dhcp stage.
net_up() {
	case $ONEROOT_IP in
	'' | dhcp | on | any | both) ;;
	off | none)
		ONEROOT_STAGE_MESSAGE="ip=$ONEROOT_IP: no network"
		oneroot_log "ip=$ONEROOT_IP: not configuring the network"
		return 0
		;;
	*)
		oneroot_fail "ip=$ONEROOT_IP is not supported" \
			"use ip=dhcp (the oneroot server answers DHCP for known nodes), or ip=off"
		return 1
		;;
	esac
	if ! net_wait_candidates; then
		if [ -n "$ONEROOT_BOOTIF" ]; then
			oneroot_fail "no network interface has the MAC $ONEROOT_BOOTIF (BOOTIF=)" \
				"the NIC's driver is not in the initramfs: rebuild it with that NIC's module (extra_nics / --nic); \`ls /sys/class/net\` shows what the kernel found"
		else
			oneroot_fail "no network interface found" \
				"the NIC's driver is not in the initramfs: rebuild it with that NIC's module (extra_nics / --nic); \`ls /sys/class/net\` shows what the kernel found"
		fi
		return 1
	fi
	_nu_round=1
	_nu_delay=1
	while :; do
		for _nu_if in $NET_CANDIDATES; do
			oneroot_log "DHCP on $_nu_if (round $_nu_round of $ONEROOT_DHCP_TRIES)"
			if net_udhcpc "$_nu_if" && net_load_lease; then
				oneroot_log "DHCP: $ONEROOT_NET_IP/$ONEROOT_NET_PREFIX on $ONEROOT_NET_IF, server ${ONEROOT_NET_SERVER:-?}, dns ${ONEROOT_NET_DNS:-none}"
				ONEROOT_STAGE_MESSAGE="$ONEROOT_NET_IF $ONEROOT_NET_IP/$ONEROOT_NET_PREFIX"
				return 0
			fi
		done
		if [ "$_nu_round" -ge "$ONEROOT_DHCP_TRIES" ]; then
			break
		fi
		oneroot_log "no DHCP lease yet; next round in ${_nu_delay}s"
		oneroot_run sleep "$_nu_delay"
		_nu_round=$((_nu_round + 1))
		_nu_delay=$((_nu_delay * 2))
		if [ "$_nu_delay" -gt 16 ]; then
			_nu_delay=16
		fi
	done
	oneroot_fail "no DHCP lease on $NET_CANDIDATES after $ONEROOT_DHCP_TRIES rounds" \
		"check that \`oneroot serve\` runs on this network and knows this node's MAC (${ONEROOT_BOOTIF:-see BOOTIF= or ip link}): \`oneroot node list\`"
}

# net_is_address TEXT: an IPv4 dotted quad or an IPv6 address (no brackets).
net_is_address() {
	case $1 in
	*:*) return 0 ;;
	*[!0-9.]* | '') return 1 ;;
	esac
	return 0
}

# net_parse_nslookup: busybox nslookup's output on stdin; prints the first IPv4 address of the
# answer section (the lines after "Name:").
net_parse_nslookup() {
	_np_in_answer=''
	while IFS= read -r _np_line; do
		case $_np_line in
		Name:*) _np_in_answer=1 ;;
		Address:* | 'Address '[0-9]*:*)
			[ -n "$_np_in_answer" ] || continue
			_np_addr=${_np_line#*:}
			set -f
			# shellcheck disable=SC2086 # trims blanks
			set -- $_np_addr
			set +f
			case ${1-} in
			*.*.*.*)
				printf '%s\n' "$1"
				return 0
				;;
			esac
			;;
		esac
	done
	return 1
}

# net_resolve NAME: prints NAME's IPv4 address (an address prints itself).
net_resolve() {
	if net_is_address "$1"; then
		printf '%s\n' "$1"
		return 0
	fi
	for _nr_dns in ${ONEROOT_NET_DNS-}; do
		if nslookup -type=a "$1" "$_nr_dns" 2>/dev/null | net_parse_nslookup; then
			return 0
		fi
	done
	return 1
}
