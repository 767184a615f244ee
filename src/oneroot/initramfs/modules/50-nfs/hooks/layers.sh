# shellcheck shell=sh
# layers stage, second: mount each NFS layer.
nfs_mount_layers
