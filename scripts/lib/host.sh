# What lvn's scripts (scripts/*, packaging/*) need on the host, installed by
# the scripts themselves. Sourced, not run. The machine they assume is fresh:
# Debian 12, root, and Rust installed by rustup (cargo in /root/.cargo/bin),
# nothing else; every script must work when started as
#   env -i PATH=/root/.cargo/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root SCRIPT
# or through sudo (whose PATH lacks ~/.cargo/bin). So: every Debian package,
# pip tool and cargo tool a script uses is installed here on demand, and
# every PATH entry it relies on is set here.

# lvn_die MESSAGE...: the error on stderr, named after the script; exit 1.
lvn_die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# lvn_packages PACKAGE...: install the Debian packages that are not installed
# yet. A fresh machine has no package lists, hence the update first.
lvn_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        [ "$(id -u)" = 0 ] ||
            lvn_die "missing Debian packages: ${missing[*]} (run as root to install them)"
        echo "installing: ${missing[*]}" >&2
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    fi
}

# lvn_packages_no_service PACKAGE...: lvn_packages for packages that ship a
# system service (bird2): the tests run their own instances in their own
# namespaces, so the package's service must not start on install. A
# policy-rc.d that denies every start is put in place for the install only,
# unless one exists already (container images have one).
lvn_packages_no_service() {
    local ours=
    if ! [ -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        ours=1
    fi
    local rc=0
    lvn_packages "$@" || rc=$?
    if [ -n "$ours" ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    return "$rc"
}

# lvn_cargo: cargo on PATH, and the C toolchain that linking Rust and the
# `cc` crate (a build dependency) need. rustup puts cargo in ~/.cargo/bin,
# which sudo's secure_path and a bare PATH leave out.
lvn_cargo() {
    local dir
    if ! command -v cargo >/dev/null; then
        for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
            if [ -x "$dir/cargo" ]; then
                PATH="$dir:$PATH"
                export PATH
                break
            fi
        done
    fi
    command -v cargo >/dev/null ||
        lvn_die "cargo not found on PATH nor in ~/.cargo/bin: install Rust with rustup (https://rustup.rs)"
    lvn_packages gcc libc6-dev
}

# lvn_cargo_deb: cargo-deb, the version the packaging was written against.
LVN_CARGO_DEB_VERSION=3.8.0
lvn_cargo_deb() {
    lvn_cargo
    # dpkg-shlibdeps (Depends: $auto) and strip.
    lvn_packages dpkg-dev binutils
    local have
    have=$(cargo deb --version 2>/dev/null) || have=
    if [ -z "$have" ]; then
        echo "installing cargo-deb $LVN_CARGO_DEB_VERSION (a few minutes, once)" >&2
        cargo install cargo-deb --version "$LVN_CARGO_DEB_VERSION" --locked >&2
    elif [ "$have" != "cargo-deb $LVN_CARGO_DEB_VERSION" ]; then
        echo "${0##*/}: warning: $have, but the packaging was written against" \
            "$LVN_CARGO_DEB_VERSION (cargo install cargo-deb --version $LVN_CARGO_DEB_VERSION --locked)" >&2
    fi
}

# lvn_virtme: virtme-ng, pinned, in its own virtualenv, and the host side of
# a VM that boots Debian's kernel (QEMU, the kernel, busybox). Sets `vng` and
# puts the virtualenv's bin/ first on PATH: vng starts virtme-run through
# the shell, by name.
#
# The virtualenv is $LVN_VM_VENV (default /opt/lvn-vm/venv). It must not be
# under a directory the guest mounts its own file system over (/tmp, /run,
# /var/tmp, /var/cache, /var/log, /var/lib): the guest's init runs from it.
LVN_VNG_VERSION=1.42
lvn_virtme() {
    local venv=${LVN_VM_VENV:-/opt/lvn-vm/venv}
    case $venv in
    /*) ;;
    *) lvn_die "LVN_VM_VENV=$venv: expected an absolute path" ;;
    esac
    venv=$(realpath -m "$venv")
    case $venv/ in
    // | /tmp/* | /run/* | /var/tmp/* | /var/cache/* | /var/log/* | /var/lib/* | /dev/* | /proc/* | /sys/*)
        lvn_die "LVN_VM_VENV=$venv: the VM mounts its own file systems over /tmp, /run," \
            "/var/tmp, /var/cache, /var/log and /var/lib and runs its init from the virtualenv;" \
            "pick a directory elsewhere, e.g. /opt/lvn-vm/venv"
        ;;
    esac
    lvn_packages qemu-system-x86 busybox-static linux-image-amd64 kmod python3 python3-venv
    if ! [ -x "$venv/bin/virtme-run" ] ||
        [ "$("$venv/bin/vng" --version 2>/dev/null)" != "virtme-ng $LVN_VNG_VERSION" ]; then
        # Replaced whole, so it must be one (or empty): never delete anything else.
        if [ -e "$venv" ] && ! [ -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv")" ]; then
            lvn_die "LVN_VM_VENV=$venv exists and is not a virtualenv: pick another directory"
        fi
        echo "installing virtme-ng $LVN_VNG_VERSION into $venv" >&2
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        # Debian's Python, whatever python3 comes first on PATH.
        /usr/bin/python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "virtme-ng==$LVN_VNG_VERSION" >&2
    fi
    PATH="$venv/bin:$PATH"
    export PATH
    vng=$venv/bin/vng
    # Fail here, not with "virtme-run: not found" from inside vng and a VM
    # that never reported.
    local tool
    for tool in vng virtme-run; do
        [ "$(command -v "$tool")" = "$venv/bin/$tool" ] ||
            lvn_die "$tool is not runnable from $venv/bin (found: $(command -v "$tool" || echo nothing))"
        "$tool" --help >/dev/null 2>&1 ||
            lvn_die "$venv/bin/$tool --help fails: remove $venv and run again to reinstall"
    done
    command -v qemu-system-x86_64 >/dev/null ||
        lvn_die "qemu-system-x86_64 not found although qemu-system-x86 is installed"
}
