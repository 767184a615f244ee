# shellcheck shell=sh
# modules stage: load every module named in /etc/oneroot/modules.
kmod_load_all
