# shellcheck shell=sh
# layers stage, first: parse root= into ROOTSPEC_*.
rootspec_from_cmdline
