# shellcheck shell=sh
# union stage: stack the layers on /sysroot.
union_assemble
