#!/bin/sh
# Install tzcrawl's scrapyd service and daily backup timer as systemd *user* units.
#   scripts/scrapyd/install-user-units.sh            # then follow the steps it prints
# Writes ~/.config/systemd/user/tzcrawl-{scrapyd.service,backup.service,backup.timer} with this
# checkout's path filled in, ~/.local/share/tzcrawl/scrapyd/scrapyd.conf and ~/.config/tzcrawl/tzcrawl.env
# (0600) unless they exist. It enables nothing: the steps it prints do, after you edit tzcrawl.env.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
config=${XDG_CONFIG_HOME:-$HOME/.config}
units=$config/systemd/user
state=$HOME/.local/share/tzcrawl/scrapyd

case $root in
    *[!A-Za-z0-9/._-]*) echo "install-user-units: the checkout path '$root' has characters a unit file line cannot hold; move it" >&2; exit 2 ;;
esac
[ -x "$root/.venv/bin/scrapyd" ] || { echo "install-user-units: $root/.venv/bin/scrapyd is missing: run 'make setup' first" >&2; exit 2; }

umask 077
mkdir -p "$units" "$state" "$config/tzcrawl"
for unit in tzcrawl-scrapyd.service tzcrawl-backup.service tzcrawl-backup.timer; do
    sed "s|@TZCRAWL_DIR@|$root|g" "$here/$unit" > "$units/$unit.tmp"
    chmod 644 "$units/$unit.tmp"
    mv "$units/$unit.tmp" "$units/$unit"
    echo "wrote $units/$unit"
done
[ -e "$state/scrapyd.conf" ] || { cp "$here/scrapyd.conf.example" "$state/scrapyd.conf"; echo "wrote $state/scrapyd.conf"; }
[ -e "$config/tzcrawl/tzcrawl.env" ] || {
    sed -e "s|/home/you/personality-backups|$HOME/personality-backups|" \
        -e "s|/home/you/.config/tzcrawl/cookie.json|$config/tzcrawl/cookie.json|" \
        "$here/tzcrawl.env.example" > "$config/tzcrawl/tzcrawl.env"
    echo "wrote $config/tzcrawl/tzcrawl.env (edit SERVICE_WEBSITE in it)"
}
cat <<STEPS

Next:
  1. edit $config/tzcrawl/tzcrawl.env (SERVICE_WEBSITE, BACKUP_DIR)
  2. (set -a; . $config/tzcrawl/tzcrawl.env; cd $root && .venv/bin/scrapy crawl login)   # saves the cookie
  3. systemctl --user daemon-reload
     systemctl --user enable --now tzcrawl-scrapyd.service
     $root/.venv/bin/python $root/scripts/scrapyd/tzcrawl_scrapyd.py deploy
     systemctl --user enable --now tzcrawl-backup.timer
  4. loginctl enable-linger $(id -un)                  # so the timer also runs while you are logged out
STEPS
