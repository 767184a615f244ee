# shellcheck shell=sh
# switch_root stage: move the mounts and exec the image's init.
switchroot_exec
