#!/bin/sh
# shellcheck shell=sh disable=SC2034 # ONEROOT_* globals are shared by /init and its modules
# 40-rootspec/lib.sh: root= from the kernel command line, parsed by parse-root.sh (the twin of
# oneroot.rootspec; its grammar is documented at its top) into ROOTSPEC_COUNT and
# ROOTSPEC_i_TYPE/SERVER/PATH/MODE/OPTS, 1 = the bottom layer.

# shellcheck disable=SC1091 # parse-root.sh is checked on its own
. "$ONEROOT_LIB/parse-root.sh"

# rootspec_from_cmdline: the first hook of the layers stage.
rootspec_from_cmdline() {
	if [ -z "$ONEROOT_HAS_ROOT" ]; then
		oneroot_fail "no root= on the kernel command line" \
			"render the node's boot files with \`oneroot render\`; root= names its layers, e.g. root=10.0.0.1:/srv/image:ro;tmpfs"
		return 1
	fi
	if ! rootspec_parse "$ONEROOT_ROOT" 2>"$ONEROOT_RUN/rootspec.err"; then
		_rp_msg=''
		_rp_hint=''
		while IFS= read -r _rp_line; do
			printf '  %s\n' "$_rp_line" >&2
			case $_rp_line in
			'hint: '*) _rp_hint=${_rp_line#hint: } ;;
			*) [ -n "$_rp_msg" ] || _rp_msg=$_rp_line ;;
			esac
		done <"$ONEROOT_RUN/rootspec.err"
		oneroot_fail "bad root=: ${_rp_msg:-does not parse}" \
			"${_rp_hint:-fix root= of the node (\`oneroot rootspec check\`)}"
		return 1
	fi
	oneroot_log "root= has $ROOTSPEC_COUNT layers: $ROOTSPEC_CANONICAL"
	return 0
}
