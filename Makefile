# privsep-sshd: every target installs through install.sh, the one way the
# project is installed (run as root, on Debian 12).
#
#   make install     install or update from this checkout
#   make run         install, then run the server in the foreground on its
#                    defaults (port 2222), logging to stderr
#   make test        install with the test dependencies, check the import
#                    contracts (lint-imports), then run the tests
#   make bench       install with the test dependencies, then compare the
#                    installed server's speed with OpenSSH's sshd (tests/bench.py)
#   make uninstall   remove everything install.sh added
#   make deb         build dist/privsep-sshd_<version>_<arch>.deb with debhelper
#                    and dh-virtualenv, for the Debian release it runs on (any
#                    user; needs the Build-Depends of debian/control)

HERE := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

.PHONY: install run test bench uninstall deb

install:
	$(HERE)/install.sh

run:
	$(HERE)/install.sh
	exec /usr/local/sbin/privsep-sshd -D -e

# The import contracts of pyproject.toml (lint-imports, on this checkout's
# code), then the tests; pytest's exit status is make's verdict: any
# failure, or no tests collected (status 5), fails the target.
test:
	$(HERE)/install.sh --test
	cd $(HERE) && PYTHONPATH=$(HERE) /opt/privsep-sshd/bin/lint-imports --no-cache
	cd $(HERE) && /opt/privsep-sshd/bin/python -m pytest -v tests

# Reports figures and ratios against OpenSSH measured in the same run; speed
# never fails the target.
bench:
	$(HERE)/install.sh --test
	cd $(HERE) && /opt/privsep-sshd/bin/python -m tests.bench

uninstall:
	$(HERE)/install.sh --uninstall

# dpkg-buildpackage in a copy of the checkout (its build/, debian/ output
# and the .deb it writes beside the source stay out of the tree), then the
# .deb into dist/. Python packages come from PyPI, or from the wheelhouse
# that PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR name.
deb:
	set -e; build=$$(mktemp -d /tmp/privsep-sshd-deb.XXXXXX); \
	trap 'rm -rf "$$build"' EXIT; \
	mkdir "$$build/src"; \
	cd $(HERE) && tar -cf - --exclude=./.git --exclude=./dist --exclude=__pycache__ \
	    --exclude='*.pyc' --exclude=./build --exclude='*.egg-info' . | tar -xf - -C "$$build/src"; \
	cd "$$build/src" && dpkg-buildpackage -b -us -uc; \
	mkdir -p $(HERE)/dist; \
	for deb in "$$build"/*.deb; do mv "$$deb" $(HERE)/dist/; echo "built dist/$${deb##*/}"; done
