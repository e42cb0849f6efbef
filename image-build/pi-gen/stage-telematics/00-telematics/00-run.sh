#!/bin/bash -e
# pi-gen sub-stage: install the telematics-agent .deb (built by `make deb` on the image's
# architecture and copied into files/) and arm first-boot provisioning from the boot partition.
# pi-gen runs this from the sub-stage directory with ROOTFS_DIR set and on_chroot defined.

shopt -s nullglob
debs=(files/telematics-agent_*.deb)
if [ "${#debs[@]}" -ne 1 ]; then
	echo "stage-telematics: put exactly one telematics-agent_*.deb into $(pwd)/files (found ${#debs[@]})" >&2
	exit 1
fi
install -m 0644 "${debs[0]}" "${ROOTFS_DIR}/tmp/telematics-agent.deb"

# No systemd runs in the chroot: the postinst enables the agent (deb-systemd-helper) without
# starting it, and the agent's ConditionPathExists= keeps it idle until provisioning.
on_chroot <<'CHROOT'
DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/telematics-agent.deb </dev/null
rm -f /tmp/telematics-agent.deb
systemctl enable telematics-firstboot.service
CHROOT

# The folder a technician drops provision.toml and the certificates into (FAT boot partition).
install -d "${ROOTFS_DIR}/boot/firmware/telematics"
install -m 0644 files/README.txt "${ROOTFS_DIR}/boot/firmware/telematics/README.txt"
