# shellcheck shell=sh
# dhcp stage: a lease on the boot NIC, with retries and backoff.
net_up
