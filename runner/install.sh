#!/usr/bin/env bash
# Install mpsocks on a Debian machine: system packages, a virtualenv, the
# package (runner + collection), and mpsocks-run on the PATH.
#   sudo runner/install.sh                 # /opt/mpsocks, /usr/local/bin/mpsocks-run
#   sudo runner/install.sh --venv .venv --tests   # also the test tools
set -euo pipefail

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --venv DIR (default /opt/mpsocks)  --tests (pytest, ruff, ansible-test needs)  --no-link"
}

venv=/opt/mpsocks
tests=0
link=1
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv=${2:?--venv needs a directory}; shift 2 ;;
        --tests) tests=1; shift ;;
        --no-link) link=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs Debian packages)" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)

# iproute2/nftables/tcpdump/tshark: the kernel objects and the wire;
# libvirt-dev, pkg-config, gcc, python3-dev: libvirt-python compiles;
# dante-server, redsocks, mptcpd, mptcpize (`mptcpize run`): the SOCKS side and the quick start;
# libpam-pwdfile: SOCKS users checked against a file of the proxy's own; dnsmasq-base: the lab's DNS.
# debootstrap: the guest image; linux-source-6.1 ... libelf-dev: the guest's kernel (objtool needs
# gelf.h); file: the tests look at the bzImage. graphviz: lab graph --format png.
# libvirt-daemon-system, libvirt-daemon-driver-qemu, qemu-system-x86: libvirtd (virtlogd -d, libvirtd -d)
# running the VM guest; -system brings the libvirt-qemu user, /etc/libvirt and /var/log/libvirt, without
# which libvirtd starts no QEMU driver. Where systemd is not the running init, its sysv flavour, so that
# apt neither pulls in nor upgrades systemd for it. qemu-utils, openssh-client: the guest's disk is a
# qcow2 overlay on the cached image (qemu-img), and Ansible reaches the guest over ssh.
# bash-completion loads mpsocks-run's bash completion, man-db shows its manual page; with --tests, zsh
# and fish, where the tests run the completion scripts.
packages=(
    python3 python3-venv python3-dev gcc pkg-config libvirt-dev
    iproute2 nftables tcpdump tshark procps psmisc curl
    dante-server redsocks mptcpd mptcpize libpam-pwdfile dnsmasq-base
    libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils openssh-client
    debootstrap linux-source-6.1 build-essential bc bison flex libelf-dev xz-utils file graphviz
    bash-completion man-db
)
[ -d /run/systemd/system ] || packages+=(libvirt-daemon-system-sysv)
[ "$tests" = 0 ] || packages+=(zsh fish)
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if [ "$tests" = 1 ]; then
    "$venv/bin/python" -m pip install -q "$repo[users,test]"
else
    "$venv/bin/python" -m pip install -q "$repo[users]"
fi

# generate FILE ARGS...: FILE becomes what `mpsocks-run ARGS` prints, never half-written.
generate() {
    local file=$1
    shift
    mkdir -p "$(dirname "$file")"
    if ! "$venv/bin/mpsocks-run" "$@" >"$file.new"; then
        rm -f "$file.new"
        return 1
    fi
    mv "$file.new" "$file"
}

if [ "$link" = 1 ]; then
    ln -sf "$venv/bin/mpsocks-run" /usr/local/bin/mpsocks-run
    echo "install.sh: mpsocks-run -> $venv/bin/mpsocks-run"
    # Completion for the three shells and the manual page, generated from this mpsocks-run's parser.
    generate /usr/share/bash-completion/completions/mpsocks-run completion bash
    generate /usr/local/share/zsh/site-functions/_mpsocks-run completion zsh
    generate /usr/share/fish/vendor_completions.d/mpsocks-run.fish completion fish
    generate /usr/local/share/man/man1/mpsocks-run.1 man
    echo "install.sh: completion for bash, zsh and fish; man mpsocks-run"
fi
echo "install.sh: done ($venv)"
