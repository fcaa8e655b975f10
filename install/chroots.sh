#!/usr/bin/env bash
# Debian chroots that hold editors newer than Debian 12's, for the end-to-end tests:
#   trixie   Debian 13: Krita 5.2 (PyQt5) and GIMP 3.0
#   sid      Debian unstable + experimental: Krita 6 (PyQt6) and GIMP 3.2
#
# Usage:
#   install/chroots.sh [trixie] [sid]   build the chroots (no argument: both); cheap once built
#   install/chroots.sh --path NAME      print the chroot's directory
#   install/chroots.sh --mount NAME     mount proc and dev inside it (idempotent)
#   install/chroots.sh --umount NAME    unmount everything mounted inside it (idempotent)
#
# Environment:
#   SFUMATO_CHROOTS         where the chroots live (default /var/cache/sfumato/chroots)
#   SFUMATO_DEBIAN_MIRROR   Debian mirror (default: the host's own apt source, else deb.debian.org)
#
# Exit codes: 0 ready, 1 failure, 2 bad usage, 3 not possible here (not root, or no
# debootstrap and no apt-get to install it), so a caller can skip rather than fail.
set -euo pipefail

CACHE="${SFUMATO_CHROOTS:-/var/cache/sfumato/chroots}"
ALL=(trixie sid)
# Written last inside the chroot; a chroot without it (or with another hash) is rebuilt from scratch.
STAMP=.sfumato-chroot-recipe
# debootstrap and chroot live in sbin, which a non-login root shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# What each chroot holds, as data: the stamp is this text's hash, so editing it rebuilds the chroot.
#   suite S              debootstrap Debian suite S
#   source S             also list suite S (experimental is NotAutomatic: used only with -t S)
#   install [-t S] P...  apt-get install these packages, without Recommends
# python3-pyqt5/6 are only Recommends of krita: without them no Python plugin loads, silently.
# msgpack and websockets are not installed: the plugin installer vendors them.
# fonts-dejavu-core: text in screenshots. fontconfig already pulls it in today (through
# fonts-dejavu-mono); listed so that it does not depend on which alternative apt picks.
recipe() {
    case "$1" in
        trixie) cat <<'EOF'
suite trixie
install krita python3-pyqt5 gimp python3-gi gir1.2-gimp-3.0 python3 xvfb xauth fonts-dejavu-core
EOF
            ;;
        sid) cat <<'EOF'
suite sid
source experimental
install -t experimental krita python3-pyqt6
install gimp python3-gi gir1.2-gimp-3.0 python3 xvfb xauth fonts-dejavu-core
EOF
            ;;
    esac
}

editors_of() {
    case "$1" in
        trixie) echo "Krita 5.2 and GIMP 3.0 (trixie chroot)" ;;
        sid) echo "Krita 6 and GIMP 3.2 (sid chroot)" ;;
    esac
}

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_name() {
    case " ${ALL[*]} " in
        *" $1 "*) ;;
        *) echo "chroots.sh: unknown chroot '$1' (known: ${ALL[*]})" >&2; exit 2 ;;
    esac
}

chroot_dir() { echo "$CACHE/$1"; }

# "Not possible here" is exit 3, distinct from a failure, so test runners can skip.
not_possible() {
    local why=$1 names=() n
    shift
    for n in "$@"; do names+=("$(editors_of "$n")"); done
    local list
    list=$(IFS=';'; echo "${names[*]}" | sed 's/;/, /g')
    echo "chroots.sh: $list cannot be tested here: $why" >&2
    exit 3
}

require_root() {
    [ "$(id -u)" -eq 0 ] || not_possible "building and entering a chroot needs root" "$@"
}

# The host's own Debian source is the mirror this machine can reach (CI may block others).
host_mirror() {
    local uri
    uri=$({
        grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break }}'
        grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
            awk '{for (i = 2; i <= NF; i++) print $i}'
    } | sed 's:/*$::' | grep -E '/debian$' | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return
    command -v apt-get >/dev/null ||
        not_possible "debootstrap is missing and there is no apt-get to install it" "$@"
    echo "chroots.sh: installing debootstrap on the host"
    # Stale package lists are the usual reason a plain install fails; refresh only then.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
}

# --- mounts ----------------------------------------------------------------------------------

# Every mount point at or below $1, deepest first (so nested mounts go before their parents).
mounts_under() {
    findmnt -rn -o TARGET | awk -v d="$1" 'index($0, d "/") == 1 || $0 == d' | sort -r
}

mount_fs() {
    local d=$1
    mountpoint -q "$d/proc" || mount -t proc proc "$d/proc"
    mountpoint -q "$d/dev" || mount --bind /dev "$d/dev"
}

# Unmounts proc, dev and anything a test added (dev/pts, sys...). Lazy unmount only as a fallback
# for a busy mount, so that a crashed editor still holding a file does not block a rebuild.
umount_all() {
    local t
    while read -r t; do
        [ -n "$t" ] || continue
        umount "$t" 2>/dev/null || umount -l "$t"
    done < <(mounts_under "$1")
}

# Never rm -rf through a mounted /proc or /dev: unmount, check, and let rm stay on one filesystem.
remove_chroot() {
    local d=$1
    umount_all "$d"
    if [ -n "$(mounts_under "$d")" ]; then
        echo "chroots.sh: still mounted under $d, not removing it:" >&2
        mounts_under "$d" >&2
        exit 1
    fi
    rm -rf --one-file-system "$d"
}

# The EXIT trap unmounts whatever a build left mounted, on success, failure or Ctrl-C.
MOUNTED=""
cleanup() { if [ -n "$MOUNTED" ]; then umount_all "$MOUNTED"; fi; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- building --------------------------------------------------------------------------------

# A clean environment inside, so that nothing from the host (venv PATH, locale) leaks in.
in_chroot() {
    chroot "$DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# Long outputs go to the log; on failure show its end, which is where apt says what went wrong.
logged() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "$NAME: failed: $*" >&2
        tail -n 30 "$LOG" >&2
        echo "$NAME: full log: $LOG" >&2
        exit 1
    fi
}

# The host's mirror is a dated snapshot: its Release files expire ("Valid-Until") and apt would
# refuse them. Kept in the chroot so that tests installing extras there work too.
configure_apt() {
    cat >"$DIR/etc/apt/apt.conf.d/99sfumato" <<'EOF'
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
EOF
    # No service may start inside the chroot while packages install (dbus and friends).
    printf '#!/bin/sh\nexit 101\n' >"$DIR/usr/sbin/policy-rc.d"
    chmod 755 "$DIR/usr/sbin/policy-rc.d"
    rm -f "$DIR/etc/resolv.conf"
    cp -L /etc/resolv.conf "$DIR/etc/resolv.conf"
}

print_versions() {
    in_chroot dpkg-query -W -f '${Package} ${Version}\n' \
        krita gimp python3 python3-pyqt5 python3-pyqt6 2>/dev/null | sed "s/^/$NAME:   /" || true
}

build() {
    NAME=$1 DIR=$(chroot_dir "$1") LOG="$CACHE/$1.log"
    local hash steps=() line verb args suite mirror t0 t
    mapfile -t steps < <(recipe "$NAME")
    hash=$(recipe "$NAME" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$DIR/$STAMP" 2>/dev/null || true)" = "$hash" ]; then
        echo "$NAME: ready (cached) at $DIR"
        return
    fi
    if [ -e "$DIR" ]; then
        echo "$NAME: $DIR is unfinished or from another recipe: rebuilding it from scratch"
        remove_chroot "$DIR"
    fi
    mirror=${SFUMATO_DEBIAN_MIRROR:-$(host_mirror)}
    suite=$(printf '%s\n' "${steps[@]}" | awk '$1 == "suite" { print $2 }')
    : >"$LOG"
    echo "$NAME: building Debian $suite from $mirror into $DIR (log: $LOG)"

    t0=$SECONDS
    logged debootstrap --variant=minbase "$suite" "$DIR" "$mirror"
    echo "$NAME: debootstrap took $((SECONDS - t0)) s"
    configure_apt

    t=$SECONDS
    MOUNTED=$DIR
    mount_fs "$DIR"
    for line in "${steps[@]}"; do
        read -r verb args <<<"$line"
        if [ "$verb" = source ]; then
            echo "deb $mirror $args main" >"$DIR/etc/apt/sources.list.d/$args.list"
        fi
    done
    logged in_chroot apt-get update
    for line in "${steps[@]}"; do
        read -r verb args <<<"$line"
        # shellcheck disable=SC2086  # args is a word list on purpose
        if [ "$verb" = install ]; then logged in_chroot apt-get install -y --no-install-recommends $args; fi
    done
    # The downloaded .debs would double the size; tests that need more packages fetch them again.
    logged in_chroot apt-get clean
    echo "$NAME: apt took $((SECONDS - t)) s"
    print_versions
    umount_all "$DIR"
    MOUNTED=""

    echo "$hash" >"$DIR/$STAMP"
    echo "$NAME: ready in $((SECONDS - t0)) s at $DIR ($(du -sxh "$DIR" | cut -f1))"
}

# One build at a time per chroot: a second caller waits, then finds it cached.
build_locked() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.$1.lock"
    flock 9
    build "$1"
    exec 9>&-
}

main() {
    case "${1:-}" in
        -h | --help) usage ;;
        --path | --mount | --umount)
            [ $# -eq 2 ] || usage
            check_name "$2"
            local d
            d=$(chroot_dir "$2")
            case "$1" in
                --path) echo "$d" ;;
                --mount)
                    require_root "$2"
                    [ -f "$d/$STAMP" ] || { echo "chroots.sh: $2 is not built; run install/chroots.sh $2" >&2; exit 1; }
                    mount_fs "$d"
                    ;;
                --umount)
                    require_root "$2"
                    umount_all "$d"
                    ;;
            esac
            return
            ;;
        -*) usage ;;
    esac
    local names=("$@") n
    [ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
    for n in "${names[@]}"; do check_name "$n"; done
    require_root "${names[@]}"
    ensure_debootstrap "${names[@]}"
    for n in "${names[@]}"; do build_locked "$n"; done
}

main "$@"
