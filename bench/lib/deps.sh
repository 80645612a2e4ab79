# bench/lib/deps.sh: the Debian packages the peers need, installed only if
# missing. A policy-rc.d answering 101 is in place during the install so that
# no package starts a system service (php8.2-fpm and nginx would); one that
# was already there is left alone.

BENCH_DEBS=(nginx libnginx-mod-http-lua php8.2-fpm golang-go libfcgi-dev spawn-fcgi
            lua-wsapi-fcgi lua-cjson luajit2 wrk gnuplot-nox valgrind strace)

deb_missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            echo "$p"
    done
}

deps_install() {
    local missing rc=/usr/sbin/policy-rc.d added= status
    missing=$(deb_missing "${BENCH_DEBS[@]}")
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" != 0 ]; then
        die "missing Debian packages (run as root to install them):" $missing
    fi
    say "installing:" $missing
    if [ ! -e "$rc" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$rc" && chmod 755 "$rc" && added=1
    fi
    apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $missing >"$BENCH_TMP/apt.log" 2>&1
    status=$?
    [ -z "$added" ] || rm -f "$rc"
    [ "$status" = 0 ] || { tail -20 "$BENCH_TMP/apt.log" >&2; die "apt-get install failed"; }
}
