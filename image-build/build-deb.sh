#!/usr/bin/env bash
# Build image-build/out/telematics-agent_<version>_<arch>.deb: the systemd/udev/tmpfiles files,
# the first-boot script, and every wheel the agent needs, so installing needs no network.
#
# The wheels are built here for this machine's architecture and Python (systemd-python, and on
# a Pi RPi.GPIO and gpiod, are C extensions): build on the target architecture with Python 3.11,
# i.e. on a Raspberry Pi OS / Debian bookworm arm64 machine for the vans. Building needs network
# (PyPI) and gcc, pkg-config and libsystemd-dev.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
out="${TELEMATICS_DEB_OUT:-$here/out}"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"

die() { echo "build-deb: $*" >&2; exit 1; }

for tool in dpkg-deb dpkg gcc pkg-config; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install dpkg-dev gcc pkg-config)"
done
pkg-config --exists libsystemd || die "libsystemd-dev is missing (needed to build systemd-python)"
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
# The bundled C-extension wheels only load in the Python they were built for; the control file
# pins python3 to 3.11 accordingly (Debian bookworm, Raspberry Pi OS bookworm).
[ "$pyver" = 3.11 ] || die "build with Python 3.11 (bookworm's python3), not $pyver"

version="$(cd "$repo" && "$python" -c 'import agent; print(agent.__version__)')"
arch="$(dpkg --print-architecture)"
stage="$out/stage-$arch"
deb="$out/telematics-agent_${version}_${arch}.deb"

rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$out"

echo "build-deb: wheels for telematics-agent $version ($arch, Python $pyver)"
wheels="$stage/usr/lib/telematics-agent/wheels"
mkdir -p "$wheels"
# What the postinst installs, from the bundled wheels only. cryptography: `telematics-agent
# provision` (and so first-boot provisioning) imports it to check certificates, but pyproject.toml
# lists it only among the dev extras; without it provisioning dies with ModuleNotFoundError.
cat > "$stage/usr/lib/telematics-agent/requirements.txt" <<REQS
telematics-agent[systemd,pi]==$version
cryptography>=42
REQS
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$wheels" \
    "${repo}[systemd,pi]" "cryptography>=42"

install -D -m 0644 "$repo/systemd/telematics-agent.service" "$stage/lib/systemd/system/telematics-agent.service"
install -D -m 0644 "$repo/systemd/telematics-firstboot.service" "$stage/lib/systemd/system/telematics-firstboot.service"
install -D -m 0644 "$repo/systemd/99-telematics.rules" "$stage/lib/udev/rules.d/99-telematics.rules"
install -D -m 0644 "$repo/systemd/telematics-agent.tmpfiles.conf" "$stage/usr/lib/tmpfiles.d/telematics-agent.conf"
install -D -m 0644 "$repo/systemd/gnss-clock.conf" "$stage/usr/share/telematics-agent/gnss-clock.conf"
install -D -m 0644 "$repo/systemd/98-telematics-local.rules.example" \
    "$stage/usr/share/telematics-agent/98-telematics-local.rules.example"
install -D -m 0755 "$here/firstboot/telematics_firstboot.py" "$stage/usr/lib/telematics-agent/telematics-firstboot"
docs="$stage/usr/share/doc/telematics-agent"
mkdir -p "$docs"
for doc in docs/install.md image-build/README.md config/agent.example.toml; do
    [ -f "$repo/$doc" ] && install -m 0644 "$repo/$doc" "$docs/$(basename "$doc")"
done
install -m 0644 "$here/debian/copyright" "$docs/copyright"
# A native package's changelog; -n keeps the gzip reproducible (no name or time stamp).
printf 'telematics-agent (%s) stable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
    "$version" "$version" "telematics-agent maintainers <telematics-agent@example.invalid>" \
    "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")" | gzip -9n > "$docs/changelog.gz"
mkdir -p "$stage/usr/bin"
# Dangling until postinst has built the virtualenv.
ln -s /opt/telematics-agent/bin/telematics-agent "$stage/usr/bin/telematics-agent"

for script in postinst prerm postrm; do
    install -m 0755 "$here/debian/$script" "$stage/DEBIAN/$script"
done
installed_kb="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_kb/" \
    "$here/debian/control.in" > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)

# --root-owner-group: files owned by root in the package without needing fakeroot.
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "$deb"
