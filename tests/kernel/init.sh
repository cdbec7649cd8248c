#!/bin/busybox sh
# shellcheck shell=dash
# shellcheck disable=SC2154  # ktest_* are set by the kernel from its command line
# /init of the test initramfs: load the 9p/overlay modules, mount the host's / read-only over 9p with
# a tmpfs overlay on top, and switch_root into the guest script named by ktest_script= on the kernel
# command line (the kernel passes such parameters to init as environment variables).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "FAIL init: $*"
    echo "KTEST-RESULT: FAIL"
    echo o >/proc/sysrq-trigger
    sleep 10
}

while read -r m; do
    insmod "/modules/$m" || fail "insmod $m"
done </modules/order

mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /lower || fail "mount 9p hostroot"
mount -t tmpfs -o mode=0755 tmpfs /upper || fail "mount tmpfs"
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || fail "mount overlay"

[ -x "/newroot$ktest_script" ] || [ -f "/newroot$ktest_script" ] || fail "guest script $ktest_script not found"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /bin/bash "$ktest_script"
