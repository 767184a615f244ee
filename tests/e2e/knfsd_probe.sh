#!/bin/bash
say() { echo "PROBE $*" > /dev/ttyS0; }
sha() { if [ -e "$1" ]; then sha256sum "$1" | cut -c1-64; else echo missing; fi; }
me=@NODE@
round=$(cat /etc/oneroot-e2e-round 2>/dev/null || echo 0)
say node="$me" round="$round"
say root_fstype="$(findmnt -n -o FSTYPE /)"
say persist="$(tr ' ' _ < /root/persist 2>/dev/null || echo none)"
say ephemeral="$(cat /root/ephemeral 2>/dev/null || echo none)"
# the view is all_squash: its emptied /root must list (as empty), not refuse
if ls -A /root > /dev/null; then say ls_root=ok; else say ls_root=refused; fi
say failed_units="$(systemctl --failed --no-legend --plain | awk '{print $1}' | paste -sd, -)"
if [ -e /etc/issue ]; then say issue=present; else say issue=gone; fi
if tree -L 1 /etc >/dev/null 2>&1; then say tree=runs; else say tree=missing; fi
if [ "$me" = node02 ] && [ "$round" = 1 ]; then
  echo here > /root/ephemeral
  say shadow="$(sha /etc/shadow)"
  say server_secret="$(cat /root/secret 2>/dev/null || echo unreadable)"
  say host_key="$(sha /etc/ssh/ssh_host_ed25519_key)"
  mkdir -p /mnt/v4 /mnt/v3 /mnt/view /mnt/top
  if mount -t nfs -o ro,vers=4.2 10.0.0.1:/var/state/systems/node01 /mnt/v4 2>/dev/null; then
    say raw_v4=mounted raw_v4_entries="$(ls -A /mnt/v4 | wc -l)"
    say raw_v4_secret="$(cat /mnt/v4/upper/etc/node01-secret 2>/dev/null || echo unreadable)"
    umount /mnt/v4
  else
    say raw_v4=refused
  fi
  if mount -t nfs -o ro,vers=3,nolock 10.0.0.1:/var/state/systems/node01 /mnt/v3 2>/dev/null
  then say raw_v3=mounted; umount /mnt/v3; else say raw_v3=refused; fi
  if mount -t nfs -o ro,vers=3,nolock \
      10.0.0.1:/var/lib/oneroot/views/default/var/state/systems/node01 /mnt/view 2>/dev/null
  then say raw_view=mounted; umount /mnt/view; else say raw_view=refused; fi
  # a client-mode node's image in oneroot's home, by its own path (knfsd: inside the view)
  mkdir -p /mnt/img
  if mount -t nfs -o ro,vers=4.2 10.0.0.1:@SMALL@ /mnt/img 2>/dev/null; then
    init=$(readlink /mnt/img/sbin/init)
    say img_init="${init:-none}"
    if [ "$(head -c 4 "/mnt/img${init:-/sbin/init}" 2>/dev/null | tail -c 3)" = ELF ]
    then say img_init_elf=yes; else say img_init_elf=no; fi
    umount /mnt/img
  else
    say img_init=refused
  fi
  if mount -t nfs -o ro,vers=4.2 10.0.0.1:/ /mnt/top 2>/dev/null; then
    say top_shadow="$(sha /mnt/top/etc/shadow)"
    say top_secret="$(cat /mnt/top/root/secret 2>/dev/null || echo unreadable)"
    say top_node01="$(ls -A /mnt/top/var/state/systems/node01 2>/dev/null | wc -l)"
    umount /mnt/top
  else
    say top=refused
  fi
fi
argv0s() { for p in /proc/[0-9]*; do tr '\0' '\n' 2>/dev/null < "$p/cmdline" | head -n 1; done; }
say fuse_procs="$(argv0s | grep -c 'fuse-overlayfs$')"
say nfs_mounts="$(findmnt -n -t nfs,nfs4 | wc -l)"
if [ "$me" != node02 ] && [ "$round" = 1 ]; then
  echo "written on $me" > /root/persist
  if rm /etc/issue; then say rm=ok; else say rm=failed; fi
  sync
  say DONE
  systemctl reboot
else
  say DONE
  systemctl poweroff
fi
