#!/bin/sh
# make-tls.sh DIR SUBJECT_ALT_NAMES [check]
# Ensures, in DIR (the service's configuration directory, 0750 group kubespan-discovery), a CA of this service (ca.key, ca.crt: EC
# P-256, 10 years) and the service's certificate signed by it (tls.key, tls.crt: 397 days, serverAuth,
# subjectAltName SUBJECT_ALT_NAMES, e.g. "DNS:disc.example.com,IP:10.0.0.5"). Made again when missing, when the
# names changed, when it no longer verifies against the CA or expires within 30 days; the CA is made again
# only when missing or when its key and certificate do not match. New files are written in a temporary
# directory of DIR and renamed into place. Prints "changed" or "ok"; with "check", changes nothing.
# Needs only the openssl command (package openssl, a dependency of ca-certificates).
set -eu
dir=$1
san=$2
check=${3:-}
umask 077

pub() { openssl "$@" 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null | od -An -tx1 | tr -d ' \n'; }

need_ca=""
if [ ! -s "$dir/ca.crt" ] || [ ! -s "$dir/ca.key" ]; then
    need_ca=1
elif [ "$(pub pkey -in "$dir/ca.key" -pubout)" != "$(pub x509 -in "$dir/ca.crt" -noout -pubkey)" ]; then
    need_ca=1
fi
need_leaf=""
if [ -n "$need_ca" ] || [ ! -s "$dir/tls.crt" ] || [ ! -s "$dir/tls.key" ] || [ "$(cat "$dir/tls.san" 2>/dev/null || true)" != "$san" ]; then
    need_leaf=1
elif ! openssl verify -CAfile "$dir/ca.crt" "$dir/tls.crt" >/dev/null 2>&1; then
    need_leaf=1
elif ! openssl x509 -checkend 2592000 -noout -in "$dir/tls.crt" >/dev/null 2>&1; then
    need_leaf=1
elif [ "$(pub pkey -in "$dir/tls.key" -pubout)" != "$(pub x509 -in "$dir/tls.crt" -noout -pubkey)" ]; then
    need_leaf=1
fi
if [ -z "$need_ca$need_leaf" ]; then
    echo ok
    exit 0
fi
if [ -n "$check" ]; then
    echo changed
    exit 0
fi

tmp=$(mktemp -d "$dir/.tls.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [ -n "$need_ca" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=kubespan discovery CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" 2>"$tmp/err" \
        || { cat "$tmp/err" >&2; exit 1; }
    cacrt=$tmp/ca.crt
    cakey=$tmp/ca.key
else
    cacrt=$dir/ca.crt
    cakey=$dir/ca.key
fi
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=kubespan-discovery" \
    -keyout "$tmp/tls.key" -out "$tmp/tls.csr" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$san" >"$tmp/ext"
openssl x509 -req -in "$tmp/tls.csr" -CA "$cacrt" -CAkey "$cakey" -CAserial "$tmp/ca.srl" -CAcreateserial -days 397 \
    -extfile "$tmp/ext" -out "$tmp/tls.crt" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
printf '%s' "$san" >"$tmp/tls.san"
chmod 0644 "$tmp/tls.crt" "$tmp/tls.san"
if [ -n "$need_ca" ]; then
    chmod 0644 "$tmp/ca.crt"
    sync
    mv "$tmp/ca.key" "$dir/ca.key"
    mv "$tmp/ca.crt" "$dir/ca.crt"
fi
sync
mv "$tmp/tls.key" "$dir/tls.key"
mv "$tmp/tls.crt" "$dir/tls.crt"
mv "$tmp/tls.san" "$dir/tls.san"
sync
echo changed
