#!/usr/bin/env bash
# 校安 Xiaoan — install a school gateway as a systemd service on Debian 12 (x86-64, arm64, armhf).
#
#   sudo deploy/install-gateway.sh --config /path/to/edge.yaml --password-file /path/to/uplink_password
#   sudo deploy/install-gateway.sh --config edge.yaml --password-stdin < password.txt
#   deploy/install-gateway.sh --dry-run --config edge.yaml        # print every step, change nothing
#
# What it does (idempotent; run it again to upgrade):
#   - Node.js ≥ 20 at /opt/xiaoan/node (the system's if new enough, else the official build for
#     this CPU, checked against nodejs.org's SHA-256 list; --node-tarball FILE for offline boxes)
#   - system user `xiaoan` (no login, in group dialout for RS-485 adapters)
#   - the program in /opt/xiaoan/app (root-owned, read-only to the service), production
#     dependencies only (`npm ci --omit=dev`)
#   - /etc/xiaoan/edge.yaml (kept if present), /etc/xiaoan/gateway.env (XIAOAN_* overrides),
#     /etc/xiaoan/credentials/uplink_password (root only, handed over as a systemd credential)
#   - /var/lib/xiaoan for the buffer and the device registry (owned by xiaoan, kept on upgrade)
#   - the unit xiaoan-gateway.service (restarts on failure), enabled and started after
#     `xiaoan config check` accepts the configuration
#   - /usr/local/bin/xiaoan, so a technician runs `sudo xiaoan device list` as the service user
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
PREFIX=/opt/xiaoan
ETC=/etc/xiaoan
STATE=/var/lib/xiaoan
UNIT_DIR=/etc/systemd/system
SERVICE_USER=xiaoan
NODE_MAJOR=20
CONFIG=""
PASSWORD_FILE=""
PASSWORD_STDIN=0
NODE_BIN=""
NODE_TARBALL=""
DRY_RUN=0
START=1

usage() {
  cat <<'USAGE'
用法 Usage: install-gateway.sh [options]
  --config FILE          the gateway's edge.yaml (tier: edge); kept from a previous install when omitted
  --password-file FILE   the gateway's uplink (MQTT) password, as registered centrally
  --password-stdin       read that password from standard input
  --node PATH            use this Node.js (≥ 20) instead of finding or downloading one
  --node-tarball FILE    install Node.js from this official node-v20.*-linux-*.tar.xz (offline)
  --source DIR           the Xiaoan source tree to install (default: this script's repository)
  --no-start             install and enable, but do not start the service
  --dry-run              print every step without changing anything
  -h, --help             this text
USAGE
}

die() { echo "install-gateway: 错误 error: $*" >&2; exit 1; }
say() { echo "install-gateway: $*"; }
run() {
  if [ "$DRY_RUN" = 1 ]; then printf '+ %s\n' "$*"; else "$@"; fi
}
# write FILE MODE OWNER:GROUP < content
write_file() {
  local file="$1" mode="$2" owner="$3"
  if [ "$DRY_RUN" = 1 ]; then printf '+ write %s (mode %s, owner %s)\n' "$file" "$mode" "$owner"; cat >/dev/null; return; fi
  local tmp
  tmp="$(mktemp "${file}.XXXXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  mv -f "$tmp" "$file"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
    --password-file) PASSWORD_FILE="${2:?--password-file needs a file}"; shift 2 ;;
    --password-stdin) PASSWORD_STDIN=1; shift ;;
    --node) NODE_BIN="${2:?--node needs a path}"; shift 2 ;;
    --node-tarball) NODE_TARBALL="${2:?--node-tarball needs a file}"; shift 2 ;;
    --source) SOURCE_DIR="$(cd "${2:?--source needs a directory}" && pwd)"; shift 2 ;;
    --no-start) START=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

# ---- checks before touching anything --------------------------------------------------------
[ -f "$SOURCE_DIR/package-lock.json" ] && [ -f "$SOURCE_DIR/bin/xiaoan.js" ] \
  || die "$SOURCE_DIR is not a Xiaoan source tree (no package-lock.json / bin/xiaoan.js); use --source DIR"
[ -f "$SOURCE_DIR/deploy/systemd/xiaoan-gateway.service" ] || die "the unit file is missing from $SOURCE_DIR/deploy/systemd"
if [ "$DRY_RUN" = 0 ]; then
  [ "$(id -u)" = 0 ] || die "run as root (sudo), or with --dry-run to see the steps"
  [ -f /etc/debian_version ] || die "this installer is for Debian (and derivatives such as Raspberry Pi OS)"
  command -v systemctl >/dev/null || die "systemd is required"
fi
if [ -n "$CONFIG" ]; then
  [ -r "$CONFIG" ] || die "config file $CONFIG cannot be read"
  grep -Eq '^tier:[[:space:]]*edge[[:space:]]*$' "$CONFIG" || die "$CONFIG must say \`tier: edge\` (a gateway configuration)"
elif [ "$DRY_RUN" = 0 ] && [ ! -f "$ETC/edge.yaml" ]; then
  die "no configuration: give --config FILE (start from docker/config/school/edge.yaml)"
fi
PASSWORD=""
if [ -n "$PASSWORD_FILE" ]; then
  [ -r "$PASSWORD_FILE" ] || die "password file $PASSWORD_FILE cannot be read"
  PASSWORD="$(cat "$PASSWORD_FILE")"
elif [ "$PASSWORD_STDIN" = 1 ]; then
  IFS= read -r PASSWORD || true
fi
if [ -z "$PASSWORD" ] && [ "$DRY_RUN" = 0 ] && [ ! -s "$ETC/credentials/uplink_password" ]; then
  die "no uplink password: give --password-file FILE or --password-stdin (the one registered for this gateway)"
fi

case "$(uname -m)" in
  x86_64|amd64) NODE_ARCH=x64 ;;
  aarch64|arm64) NODE_ARCH=arm64 ;;
  armv7l|armv7*|armhf) NODE_ARCH=armv7l ;;
  *) die "CPU $(uname -m) is not supported (x86-64, arm64, armv7)" ;;
esac

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# ---- packages ----------------------------------------------------------------------------------
say "1/8 system packages (compilers for native modules, certificates)"
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  ca-certificates curl xz-utils python3 make g++

# ---- Node.js -----------------------------------------------------------------------------------
say "2/8 Node.js ≥ $NODE_MAJOR at $PREFIX/node"
run mkdir -p "$PREFIX"
if [ -z "$NODE_BIN" ] && command -v node >/dev/null && [ "$(node_major "$(command -v node)")" -ge "$NODE_MAJOR" ]; then
  NODE_BIN="$(command -v node)"
fi
if [ -n "$NODE_BIN" ]; then
  [ "$DRY_RUN" = 1 ] || [ "$(node_major "$NODE_BIN")" -ge "$NODE_MAJOR" ] || die "$NODE_BIN is older than Node.js $NODE_MAJOR"
  run mkdir -p "$PREFIX/node/bin"
  run ln -sfn "$NODE_BIN" "$PREFIX/node/bin/node"
  NPM_BIN="$(dirname "$NODE_BIN")/npm"
elif [ -x "$PREFIX/node/bin/node" ] && [ "$(node_major "$PREFIX/node/bin/node")" -ge "$NODE_MAJOR" ]; then
  say "   keeping $("$PREFIX/node/bin/node" --version) in $PREFIX/node"
  NPM_BIN="$PREFIX/node/bin/npm"
else
  tarball="$NODE_TARBALL"
  if [ -z "$tarball" ]; then
    base="https://nodejs.org/dist/latest-v${NODE_MAJOR}.x"
    work="$(mktemp -d)"
    run curl -fsSLo "$work/SHASUMS256.txt" "$base/SHASUMS256.txt"
    if [ "$DRY_RUN" = 1 ]; then
      name="node-v${NODE_MAJOR}.x-linux-${NODE_ARCH}.tar.xz"
    else
      name="$(grep -o "node-v[0-9.]*-linux-${NODE_ARCH}\.tar\.xz" "$work/SHASUMS256.txt" | head -n1)"
      [ -n "$name" ] || die "nodejs.org lists no build for linux-${NODE_ARCH}"
    fi
    run curl -fsSLo "$work/$name" "$base/$name"
    if [ "$DRY_RUN" = 0 ]; then
      (cd "$work" && grep " ${name}\$" SHASUMS256.txt | sha256sum -c --quiet -) || die "checksum of $name does not match nodejs.org's list"
    fi
    tarball="$work/$name"
  fi
  run rm -rf "$PREFIX/node.new"
  run mkdir -p "$PREFIX/node.new"
  run tar -xJf "$tarball" -C "$PREFIX/node.new" --strip-components=1
  run rm -rf "$PREFIX/node"
  run mv "$PREFIX/node.new" "$PREFIX/node"
  NPM_BIN="$PREFIX/node/bin/npm"
fi

# ---- user --------------------------------------------------------------------------------------
say "3/8 service user $SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  run adduser --system --group --home "$STATE" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi
run usermod -a -G dialout "$SERVICE_USER"

# ---- program -----------------------------------------------------------------------------------
say "4/8 program in $PREFIX/app (production dependencies only)"
run rm -rf "$PREFIX/app.new"
run mkdir -p "$PREFIX/app.new"
for item in package.json package-lock.json tsconfig.json bin cli contract device-drivers edge ingest rules dashboards docs deploy; do
  [ -e "$SOURCE_DIR/$item" ] && run cp -a "$SOURCE_DIR/$item" "$PREFIX/app.new/"
done
run find "$PREFIX/app.new" -name '*.test.ts' -delete
run env PATH="$PREFIX/node/bin:$PATH" "$NPM_BIN" ci --omit=dev --no-audit --no-fund --prefix "$PREFIX/app.new"
run chown -R root:root "$PREFIX/app.new"
run rm -rf "$PREFIX/app.old"
if [ -d "$PREFIX/app" ] || [ "$DRY_RUN" = 1 ]; then run mv "$PREFIX/app" "$PREFIX/app.old"; fi
run mv "$PREFIX/app.new" "$PREFIX/app"

# ---- configuration and secrets -----------------------------------------------------------------
say "5/8 configuration in $ETC"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
run install -d -m 0700 -o root -g root "$ETC/credentials"
if [ -n "$CONFIG" ]; then
  write_file "$ETC/edge.yaml" 0640 "root:$SERVICE_USER" <"$CONFIG"
fi
if [ "$DRY_RUN" = 1 ] || [ ! -f "$ETC/gateway.env" ]; then
  write_file "$ETC/gateway.env" 0640 "root:$SERVICE_USER" <<'ENV'
# XIAOAN_* overrides of /etc/xiaoan/edge.yaml (docs/configuration.md), one VAR=value per line.
# Secrets do not go here: the uplink password is /etc/xiaoan/credentials/uplink_password.
#XIAOAN_UPLINK__URL=mqtts://broker.city.example:8883
#XIAOAN_LOG_LEVEL=info
ENV
fi
if [ -n "$PASSWORD" ]; then
  printf '%s' "$PASSWORD" | write_file "$ETC/credentials/uplink_password" 0600 root:root
elif [ "$DRY_RUN" = 1 ]; then
  write_file "$ETC/credentials/uplink_password" 0600 root:root </dev/null
fi

# ---- state -------------------------------------------------------------------------------------
say "6/8 buffer and registry in $STATE (kept across upgrades)"
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE"

# ---- unit and command --------------------------------------------------------------------------
say "7/8 systemd unit xiaoan-gateway.service and /usr/local/bin/xiaoan"
write_file "$UNIT_DIR/xiaoan-gateway.service" 0644 root:root <"$SOURCE_DIR/deploy/systemd/xiaoan-gateway.service"
write_file /usr/local/bin/xiaoan 0755 root:root <<WRAPPER
#!/bin/sh
# Xiaoan's command on this gateway, run as the service user so it shares the registry and buffer.
if [ "\$(id -un)" = "$SERVICE_USER" ]; then
  exec env XIAOAN_DATA_DIR=$STATE $PREFIX/node/bin/node $PREFIX/app/bin/xiaoan.js "\$@"
fi
exec sudo -u $SERVICE_USER env XIAOAN_DATA_DIR=$STATE $PREFIX/node/bin/node $PREFIX/app/bin/xiaoan.js "\$@"
WRAPPER
run systemctl daemon-reload

# ---- check, enable, start ----------------------------------------------------------------------
say "8/8 check the configuration, enable and start"
# The same check the unit runs before every start; every problem is listed at once.
run runuser -u "$SERVICE_USER" -- sh -c "set -a; . '$ETC/gateway.env'; set +a; \
  exec env XIAOAN_DATA_DIR='$STATE' '$PREFIX/node/bin/node' '$PREFIX/app/bin/xiaoan.js' config check --tier edge '$ETC/edge.yaml'"
run systemctl enable xiaoan-gateway.service
if [ "$START" = 1 ]; then
  run systemctl restart xiaoan-gateway.service
  say "started; follow it with: journalctl -u xiaoan-gateway -f"
fi
run rm -rf "$PREFIX/app.old"
say "done 完成"
