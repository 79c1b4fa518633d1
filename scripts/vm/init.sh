#!/bin/sh
# /init of the physmem test initramfs (busybox sh). Generic: everything that
# differs per boot comes from the writable 9p export "results":
#   setup.sh     sourced here before the chroot (modules, huge pages, ...)
#   cmd.sh       run by the host's /bin/sh inside `chroot /host`
#   interactive  present: give cmd.sh the console as a terminal
# and the exit status of cmd.sh is written back to results/exit-code.
export PATH=/bin:/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "PHYSMEM-VM: init started"

RESULTS_MOUNTED=
fail() {
	echo "PHYSMEM-VM: init failed: $*"
	if [ -n "$RESULTS_MOUNTED" ]; then
		echo "$*" > /results/init-error
		sync
	fi
	poweroff -f
	sleep 5
	exit 1
}

# load_module NAME: insmod NAME and its dependencies (list made at build time).
load_module() {
	[ -f "/lib/modules/load/$1" ] || { echo "no module $1 in the initramfs"; return 1; }
	for ko in $(cat "/lib/modules/load/$1"); do
		m=${ko##*/}
		m=${m%.ko}
		[ -d "/sys/module/$m" ] && continue
		insmod "$ko" || return 1
	done
}

for m in $(cat /etc/physmem/base-modules); do
	load_module "$m" || fail "loading module $m"
done

P9="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$P9,ro,cache=loose" host /host || fail "mount 9p host"
mount -t 9p -o "$P9" results /results || fail "mount 9p results"
RESULTS_MOUNTED=1

# The chroot: host / read-only, with fresh /proc /sys /dev /tmp of the guest.
mount -t proc proc /host/proc || fail "mount /host/proc"
mount -t sysfs sysfs /host/sys || fail "mount /host/sys"
mount -t devtmpfs devtmpfs /host/dev || fail "mount /host/dev"
mkdir -p /host/dev/pts /host/dev/shm /host/dev/hugepages
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t hugetlbfs hugetlbfs /host/dev/hugepages
# A repository under /tmp (a CI checkout, say) would be hidden by the guest's
# own /tmp: bind it aside first and put it back on top of the tmpfs.
REPO=$(cat /results/repo-root 2>/dev/null)
case "$REPO" in
/tmp/*) mkdir -p /mnt/repo && mount --bind "/host$REPO" /mnt/repo || fail "bind $REPO" ;;
*) REPO="" ;;
esac
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "mount /host/tmp"
if [ -n "$REPO" ]; then
	mkdir -p "/host$REPO" && mount --bind /mnt/repo "/host$REPO" || fail "rebind $REPO"
fi
# /run is a tmpfs on real systems; physmem keeps its region locks in /run/physmem.
mount -t tmpfs -o mode=0755 tmpfs /host/run || fail "mount /host/run"
mkdir -p /host/tmp/physmem-vm-results
mount --bind /results /host/tmp/physmem-vm-results || fail "bind results"
echo "PHYSMEM-VM: mounted"

if [ -f /results/setup.sh ]; then
	. /results/setup.sh
fi

if [ -f /results/interactive ]; then
	setsid cttyhack chroot /host /bin/sh /tmp/physmem-vm-results/cmd.sh
	rc=$?
else
	chroot /host /bin/sh /tmp/physmem-vm-results/cmd.sh < /dev/null
	rc=$?
fi

echo "$rc" > /results/exit-code
sync
umount /host/tmp/physmem-vm-results 2>/dev/null
[ -n "$REPO" ] && umount "/host$REPO" 2>/dev/null
umount /results 2>/dev/null
echo "PHYSMEM-VM: exit $rc"
poweroff -f
