#!/usr/bin/env bash
# sdbox-init.sh BOX — the inside of lib/sdbox.bash's container: run by
# `unshare --mount --pid --fork --net --uts --ipc --cgroup`, it builds a root
# for systemd and execs systemd as PID 1 of the new PID namespace.
#   BOX/root  the root: an overlay of the host's / with a tmpfs (BOX/rw) on
#             top, so nothing the container writes reaches the host's files
#   /dev      a tmpfs with null, zero, full, random, urandom, tty, its own
#             devpts, and a console that is the file BOX/console.log
#   /proc, /sys (read-only), /run, /tmp fresh; /sys/fs/cgroup the cgroup2
#             hierarchy seen from the new cgroup namespace (systemd's root is
#             the cgroup sdbox.bash made for it); the network has only lo.
# Mounts are made shared after pivot_root, as systemd expects of its root
# (LoadCredential= mounts the credentials in a service's namespace and needs
# the propagation).
set -eu -o pipefail
B=$1
mount -t tmpfs tmpfs "$B/rw"
mkdir -p "$B/rw/upper" "$B/rw/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/rw/upper,workdir=$B/rw/work" "$B/root"
R=$B/root
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for n in null zero full random urandom tty; do
    touch "$R/dev/$n"
    mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
: >"$B/console.log"
touch "$R/dev/console"
mount --bind "$B/console.log" "$R/dev/console"
mount -t proc proc "$R/proc"
mount -t sysfs -o ro sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
ip link set lo up
# A target with nothing but the base system: the tests start the wren units.
mkdir -p "$R/etc/systemd/system"
printf '[Unit]\nDescription=sdbox\nRequires=basic.target\nAfter=basic.target\n' \
    >"$R/etc/systemd/system/sdbox.target"
cd "$R"
mkdir -p oldroot
pivot_root . oldroot
umount -l /oldroot
mount --make-rshared /
export container=wren-sdbox
exec /lib/systemd/systemd --unit=sdbox.target --log-target=console --show-status=no
