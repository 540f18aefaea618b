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

HERE := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

.PHONY: install run test bench uninstall

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
