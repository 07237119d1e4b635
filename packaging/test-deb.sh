#!/bin/bash
# Build the wsfw .deb, install it on this Debian 12 machine, and prove it works:
#
#   1. dpkg-buildpackage -us -uc -b (dh-virtualenv) from a copy of the work tree
#   2. dpkg -i; the wsfw user, /var/log/wsfw, conffiles, /usr/bin/wsfw are there
#   3. a local edit of the conffile /etc/wsfw/wsfw.ini: fresh ports and a test
#      route to a local upstream (the package's own demo app)
#   4. the INSTALLED daemon started exactly as the systemd unit's ExecStartPre
#      and ExecStart lines say, as user wsfw (no systemd in this sandbox:
#      setpriv does the User=/NoNewPrivileges= part), with the unit's
#      CACHE_DIRECTORY/LOGS_DIRECTORY: a message relays, an attack gets 1008,
#      the admin listener answers, the audit file records the block,
#      SIGUSR1 reopens it after a logrotate-style rename, SIGHUP leaves it running
#   5. an upgrade to a second version whose shipped wsfw.ini changed keeps the
#      locally edited conffile (dpkg --force-confold, as apt does with
#      Dpkg::Options::=--force-confold), and the daemon still works with it
#   6. dpkg --purge removes everything but the wsfw user
#
# Output: a transcript on stdout; the full build log, `dpkg -c` listing and
# lintian report under $WORK/out (WORK defaults to a fresh /tmp directory).
# Needs root and the build dependencies (make test-deb installs them).

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/wsfw-test-deb.XXXXXX)}
OUT="$WORK/out"
VENV=/opt/venvs/wsfw
UNIT=/lib/systemd/system/wsfw.service
CONF=/etc/wsfw/wsfw.ini
mkdir -p "$OUT"

step() { printf '\n=== %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

[ "$(id -u)" = 0 ] || fail "run as root (dpkg -i, a system user, setpriv)"
for tool in dpkg-buildpackage dh_virtualenv lintian setpriv curl; do
    command -v "$tool" >/dev/null || fail "$tool missing: apt-get install -y dh-virtualenv debhelper devscripts lintian build-essential python3-dev python3-venv curl"
done
if dpkg -s wsfw >/dev/null 2>&1; then
    fail "a wsfw package is already installed; this script installs and purges its own (dpkg --purge wsfw first)"
fi

DAEMON_PID=
DEMO_PID=
cleanup() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null || true
    [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null || true
}
trap cleanup EXIT

# -- 1. build ----------------------------------------------------------------------
step "1. build: dpkg-buildpackage -us -uc -b (log: $OUT/build.log)"
mkdir -p "$WORK/v1/wsfw"
(cd "$SRC" && git ls-files -co --exclude-standard | while read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done) \
    | grep -v -e '^docs/.*\.png$' -e '^bench/results/' \
    | tar -C "$SRC" -cf - -T - | tar -C "$WORK/v1/wsfw" -xf -
start=$(date +%s)
if ! (cd "$WORK/v1/wsfw" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b) >"$OUT/build.log" 2>&1; then
    tail -60 "$OUT/build.log"
    fail "dpkg-buildpackage failed (full log: $OUT/build.log)"
fi
echo "unit tests at build time: $(grep -E '^[0-9]+ passed' "$OUT/build.log" | tail -1)"
grep -E '^compiled modules import after dh_strip' "$OUT/build.log" || fail "no import check after dh_strip"
DEB=$(ls "$WORK"/v1/wsfw_*.deb)
echo "built $(basename "$DEB") ($(du -h "$DEB" | cut -f1)) in $(( $(date +%s) - start ))s"

step "dpkg -c (full listing: $OUT/dpkg-c.txt)"
dpkg -c "$DEB" >"$OUT/dpkg-c.txt"
echo "$(wc -l <"$OUT/dpkg-c.txt") entries; outside the virtualenv:"
grep -v ' \./opt/venvs/wsfw/.' "$OUT/dpkg-c.txt" | awk '{printf "%s %s %9s %s %s %s\n", $1, $2, $3, $6, $7, $8}'
echo "in the virtualenv ($(grep -c ' \./opt/venvs/wsfw/' "$OUT/dpkg-c.txt") entries), among them:"
grep -E ' \./opt/venvs/wsfw/(bin/(python3?|twistd|wsfw)|lib/python3\.11/site-packages/(wsfw/admin/static/[a-z.]+|twisted/plugins/wsfw_plugin\.py|hyperscan/_hs_ext[^/]*\.so|libinjection[^/]*\.so))( |$)' \
    "$OUT/dpkg-c.txt" | awk '{printf "%s %9s %s %s %s\n", $1, $3, $6, $7, $8}'

step "lintian (full report: $OUT/lintian.txt)"
lintian --no-tag-display-limit --info "$DEB" >"$OUT/lintian.txt" 2>&1 || true
echo "errors: $(grep -c '^E:' "$OUT/lintian.txt" || true), warnings: $(grep -c '^W:' "$OUT/lintian.txt" || true), info: $(grep -c '^I:' "$OUT/lintian.txt" || true)"
grep -E '^[EWI]:' "$OUT/lintian.txt" | awk '{print $1, $3}' | sort | uniq -c | sort -rn | head -25

# -- 2. install --------------------------------------------------------------------
step "2. install: dpkg -i $(basename "$DEB")"
dpkg -i "$DEB"
dpkg -s wsfw | grep -E '^(Status|Version|Depends):'
echo "conffiles:"; dpkg-query -W -f='${Conffiles}\n' wsfw | sed '/^$/d'
id wsfw
ls -ld /var/log/wsfw /var/cache/wsfw /etc/wsfw /etc/wsfw/rules.d
ls -l /usr/bin/wsfw
/usr/bin/wsfw --version
"$VENV/bin/python" -c 'import sys; print("venv python:", sys.version.split()[0], sys.executable)'
echo "systemd-analyze verify:"; systemd-analyze verify "$UNIT" 2>&1 | sed 's/^/  /' || true

# -- 3. local conffile edit ---------------------------------------------------------
step "3. edit the conffile: fresh ports, a test route to a local upstream"
PUBLIC=$(free_port); ADMIN=$(free_port); UPSTREAM=$(free_port)
sed -i -e "s|^endpoint = tcp:8080:interface=127.0.0.1$|endpoint = tcp:$PUBLIC:interface=127.0.0.1|" \
       -e "s|^endpoint = tcp:9180:interface=127.0.0.1$|endpoint = tcp:$ADMIN:interface=127.0.0.1|" "$CONF"
cat >>"$CONF" <<EOF

# added by test-deb.sh: the package's demo app as a test upstream
[route:test-deb]
path = /test-deb/
upstream = ws://127.0.0.1:$UPSTREAM/ws/echo
EOF
grep -nE "^endpoint|^\[route|^upstream|^audit_file" "$CONF"
EDITED_MD5=$(md5sum "$CONF" | cut -d' ' -f1)

setpriv --reuid=wsfw --regid=wsfw --init-groups --no-new-privs \
    "$VENV/bin/python" -m wsfw.demo --listen "tcp:$UPSTREAM:interface=127.0.0.1" >"$OUT/demo.log" 2>&1 &
DEMO_PID=$!

run_unit() {  # $1: log file. ExecStartPre, then ExecStart in the background, as the unit would.
    local pre start
    pre=$(sed -n 's/^ExecStartPre=//p' "$UNIT")
    start=$(sed -n 's/^ExecStart=//p' "$UNIT")
    echo "ExecStartPre: $pre"
    (cd / && env -i PATH=/usr/bin:/bin setpriv --reuid=wsfw --regid=wsfw --init-groups --no-new-privs $pre) \
        || fail "ExecStartPre (check-config) refused the configuration"
    echo "ExecStart:    $start"
    (cd / && umask 0027 && exec env -i PATH=/usr/bin:/bin CACHE_DIRECTORY=/var/cache/wsfw LOGS_DIRECTORY=/var/log/wsfw \
        setpriv --reuid=wsfw --regid=wsfw --init-groups --no-new-privs $start) >"$1" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 1 120); do
        grep -q "wsfw starting with" "$1" && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$1"; fail "the daemon exited"; }
        sleep 0.5
    done
    grep -q "wsfw starting with" "$1" || { cat "$1"; fail "the daemon did not start within 60s"; }
    # Ready means every worker serves (workers = auto: one per CPU, each loading the signature
    # database, compiled on the first start): what a load balancer's health check would wait for.
    for _ in $(seq 1 240); do
        curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN/readyz" 2>/dev/null && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$1"; fail "the daemon exited"; }
        sleep 0.5
    done
    curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN/readyz" || { cat "$1"; fail "not ready within 120s"; }
    grep -E "listening \[" "$1" | sed 's/^/  /'
    echo "  runs as: $(ps -o user=,pid=,args= -p "$DAEMON_PID" | cut -c1-140)"
}

stop_unit() {
    kill -TERM "$DAEMON_PID"
    local rc=0
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=
    # twistd stops cleanly, then re-raises the SIGTERM it handled (status 143), which
    # systemd counts as a clean stop.
    echo "SIGTERM: daemon stopped (status $rc)"
    [ "$rc" = 143 ] || [ "$rc" = 0 ] || fail "unclean exit"
}

# -- 4. run the installed daemon ------------------------------------------------------
step "4. start the installed daemon as the unit does (user wsfw)"
run_unit "$OUT/daemon-1.log"

step "relay a message and block an attack (client: the package's own Autobahn)"
"$VENV/bin/python" "$HERE/ws_probe.py" "ws://127.0.0.1:$PUBLIC/test-deb/"

step "admin listener"
curl -fsS "http://127.0.0.1:$ADMIN/healthz"
curl -fsS "http://127.0.0.1:$ADMIN/readyz"; echo
curl -fsS "http://127.0.0.1:$ADMIN/metrics" | grep -E '^wsfw_(blocks_total|messages_total\{direction="client"|handshakes_total|build_info)'
curl -fsS "http://127.0.0.1:$ADMIN/api/events?limit=1" | "$VENV/bin/python" -c \
    'import json,sys; e=json.load(sys.stdin)["events"][0]; print("latest event:", e["action"], e["param"], e["rule_ids"][0], e["peer"])'
curl -fsS -D - -o /dev/null "http://127.0.0.1:$ADMIN/" | grep -iE '^(content-type|content-security-policy|x-content-type-options):'

step "audit file, SIGUSR1 after a logrotate-style rename, SIGHUP"
ls -l /var/log/wsfw/
grep -c '"action": "block"' /var/log/wsfw/audit.json | sed 's/^/blocks in audit.json: /'
mv /var/log/wsfw/audit.json /var/log/wsfw/audit.json.1
kill -USR1 "$DAEMON_PID"
sleep 1
"$VENV/bin/python" "$HERE/ws_probe.py" "ws://127.0.0.1:$PUBLIC/test-deb/" >/dev/null
sleep 0.5
[ -s /var/log/wsfw/audit.json ] || fail "no new audit.json after SIGUSR1"
ls -l /var/log/wsfw/
grep -h "SIGUSR1" "$OUT/daemon-1.log" | sed 's/^/  /'
kill -HUP "$DAEMON_PID"
sleep 1
kill -0 "$DAEMON_PID" || fail "SIGHUP killed the daemon"
grep -h "SIGHUP" "$OUT/daemon-1.log" | sed 's/^/  /'
stop_unit

# -- 5. upgrade keeps the edited conffile --------------------------------------------
step "5. upgrade to a second version whose shipped wsfw.ini changed"
V2="$WORK/v2"
rm -rf "$V2" && mkdir -p "$V2"
dpkg-deb -R "$DEB" "$V2/root"
VERSION=$(dpkg-deb -f "$DEB" Version)
sed -i "s/^Version: .*/Version: $VERSION+upgrade1/" "$V2/root/DEBIAN/control"
printf '\n# (shipped by the upgrade test build)\n' >>"$V2/root/etc/wsfw/wsfw.ini"
(cd "$V2/root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | xargs -0 md5sum >DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zgzip -z1 -b "$V2/root" "$V2/wsfw_${VERSION}+upgrade1_amd64.deb" >/dev/null
dpkg -i --force-confold "$V2/wsfw_${VERSION}+upgrade1_amd64.deb"
dpkg -s wsfw | grep -E '^Version:'
[ "$(md5sum "$CONF" | cut -d' ' -f1)" = "$EDITED_MD5" ] || fail "the edited conffile was replaced"
echo "local edits kept: $CONF unchanged (md5 $EDITED_MD5); the new shipped version is beside it:"
ls -l /etc/wsfw/
run_unit "$OUT/daemon-2.log"
"$VENV/bin/python" "$HERE/ws_probe.py" "ws://127.0.0.1:$PUBLIC/test-deb/"
stop_unit

# -- 6. purge -------------------------------------------------------------------------
step "6. purge"
kill "$DEMO_PID" 2>/dev/null || true
DEMO_PID=
dpkg --purge wsfw
for gone in "$VENV" /etc/wsfw /var/log/wsfw /var/cache/wsfw /usr/bin/wsfw "$UNIT"; do
    [ ! -e "$gone" ] || fail "$gone is still there after purge"
    echo "gone: $gone"
done
dpkg -s wsfw >/dev/null 2>&1 && fail "wsfw still known to dpkg" || echo "dpkg: wsfw not installed"
getent passwd wsfw >/dev/null && echo "kept: the wsfw system user (Debian practice: its uid may still own files)"

step "PASS: built, installed, relayed, blocked (1008), upgraded keeping the local conffile, purged"
echo "artifacts: $OUT"
