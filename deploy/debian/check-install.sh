#!/usr/bin/env bash
# The package on a clean machine, as CI runs it (as root): build the .deb with `cargo deb`
# from the binaries the test build made, install it with dpkg, start the service the way
# its systemd unit says (with systemctl where systemd runs, else the unit's ExecStartPre and
# ExecStart as written, as the unit's user), check that `p2pctl status` answers, reload and
# stop it, then purge the package. Any step that cannot run fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(id -u)" = 0 ] || { echo "check-install: must run as root (dpkg -i)" >&2; exit 1; }
profile=${PROFILE:-dev}
out=${CARGO_TARGET_DIR:-target}/debian

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
rm -rf "$out"
cargo deb -p node --profile "$profile" --no-strip --output "$out/"
deb=$(ls "$out"/p2pd_*.deb)
echo "== package: $deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

dpkg --purge p2pd >/dev/null 2>&1 || true
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    [ -d /run/systemd/system ] && systemctl stop p2pd 2>/dev/null
    dpkg --purge p2pd >/dev/null 2>&1 || true
}
trap cleanup EXIT
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"

unit=
for u in /usr/lib/systemd/system/p2pd.service /lib/systemd/system/p2pd.service; do
    [ -f "$u" ] && { unit=$u; break; }
done
[ -n "$unit" ] || { echo "check-install: the package installed no p2pd.service" >&2; exit 1; }
getent passwd p2pd >/dev/null || { echo "check-install: no p2pd user" >&2; exit 1; }
[ "$(stat -c %U:%G /etc/p2pd/p2pd.toml)" = root:p2pd ] || { echo "check-install: /etc/p2pd/p2pd.toml owner" >&2; exit 1; }
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit"
fi

if [ -d /run/systemd/system ]; then
    start() { systemctl start p2pd; }
    stop() { systemctl stop p2pd; }
    reload() { systemctl reload p2pd; }
else
    # No systemd running here: the unit's commands as written, as its user (setpriv execs
    # the command itself, so the signals below reach p2pd).
    user=$(sed -n 's/^User=//p' "$unit")
    pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
    exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
    echo "== no systemd: running as $user: $pre; $exec_start"
    as_user() { setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"; }
    start() {
        as_user $pre
        # A simple command in the background: its pid is p2pd's once setpriv and env exec.
        setpriv --reuid="$user" --regid="$user" --init-groups -- env RUST_LOG=info $exec_start \
            >> /tmp/p2pd-service.log 2>&1 &
        pid=$!
    }
    stop() { kill -TERM "$pid"; wait "$pid"; pid=; }
    reload() { kill -HUP "$pid"; }
fi

answers() {
    for _ in $(seq 1 100); do
        p2pctl status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "check-install: p2pctl status got no answer" >&2
    return 1
}

start
answers
echo "== p2pctl status"
p2pctl status
p2pctl node
# An operator changes a rate and a setting that needs a restart, and reloads.
sed -i -e 's|^total = { default = "unlimited" }|total = { default = "200Mbit/s" }|' \
    -e 's|^wan_peers = 4|wan_peers = 6|' /etc/p2pd/p2pd.toml
reload
sleep 1
p2pctl schedule | grep -q "200" || { echo "check-install: the reloaded rate is not in force" >&2; exit 1; }
stop
# Started again: the first run's reload and stop are in the audit log.
start
answers
echo "== p2pctl audit"
p2pctl audit | tee /tmp/p2pd-audit.txt
grep -q "applied shaping; at the next start network" /tmp/p2pd-audit.txt || { echo "check-install: the reload is not in the audit log" >&2; exit 1; }
grep -q "p2pd stopped (SIGTERM)" /tmp/p2pd-audit.txt || { echo "check-install: the stop is not in the audit log" >&2; exit 1; }
stop
[ -f /tmp/p2pd-service.log ] && tail -5 /tmp/p2pd-service.log
echo "check-install: the package installs, the service starts, answers, reloads and stops"
