#!/usr/bin/env bash
# capture.sh start NAME IFACE FILTER | stop NAME: a tcpdump capture in a guest of tests/vm/run.sh that must
# start and end cleanly (as molecule/default/verify_failclosed.yml's ktest-fc.sh). `stop` prints
# "capture NAME: N packets" and the packets as `tcpdump -tt` lines (epoch timestamps) into /root/ktest-fc/NAME.txt.
set -u
d=/root/ktest-fc
mkdir -p "$d"
case "$1" in
start)
    rm -f "$d/$2".*
    # shellcheck disable=SC2016  # the inner bash expands them
    setsid bash -c 'tcpdump -i "$1" -n -U -w "$2.pcap" "$3" 2>"$2.err"; echo $? > "$2.rc"' _ "$3" "$d/$2" "$4" \
        </dev/null >/dev/null 2>&1 &
    echo $! >"$d/$2.pid"
    for _ in $(seq 300); do
        grep -q "listening on" "$d/$2.err" 2>/dev/null && { echo "capture $2 on $3 started"; exit 0; }
        [ -e "$d/$2.rc" ] && break
        sleep 0.1
    done
    echo "capture $2: tcpdump did not start: $(cat "$d/$2.err" 2>/dev/null)"
    exit 1
    ;;
stop)
    pkill -INT -P "$(cat "$d/$2.pid")" -x tcpdump
    for _ in $(seq 300); do [ -e "$d/$2.rc" ] && break; sleep 0.1; done
    rc=$(cat "$d/$2.rc" 2>/dev/null || echo none)
    if [ "$rc" != 0 ] || ! grep -q "packets captured" "$d/$2.err"; then
        echo "capture $2: tcpdump failed (exit $rc): $(cat "$d/$2.err")"
        exit 1
    fi
    if ! tcpdump -r "$d/$2.pcap" -n -tt >"$d/$2.txt" 2>"$d/$2.rerr"; then
        echo "capture $2: cannot read it back: $(cat "$d/$2.rerr")"
        exit 1
    fi
    echo "capture $2: $(wc -l <"$d/$2.txt") packets"
    ;;
*)
    echo "usage: capture.sh start NAME IFACE FILTER | stop NAME" >&2
    exit 2
    ;;
esac
