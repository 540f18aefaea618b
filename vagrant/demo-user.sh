#!/bin/sh
# vagrant/demo-user.sh NAME PASSWORD [PUBLIC-KEY] - make (or update) a login
# user with a password and, if given, an authorized key. Run as root in the
# VM by the Vagrantfile's provisioning (and by tests/test_vm.py).
set -eu
name=$1 password=$2 key=${3:-}
if ! getent passwd "$name" >/dev/null; then
    useradd --create-home --shell /bin/bash "$name"
    echo "demo-user.sh: created user $name"
fi
printf '%s:%s\n' "$name" "$password" | chpasswd
if [ -n "$key" ]; then
    home=$(getent passwd "$name" | cut -d: -f6)
    install -d -o "$name" -g "$(id -gn "$name")" -m 700 "$home/.ssh"
    printf '%s\n' "$key" > "$home/.ssh/authorized_keys"
    chown "$name:$(id -gn "$name")" "$home/.ssh/authorized_keys"
    chmod 600 "$home/.ssh/authorized_keys"
fi
