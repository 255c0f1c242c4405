# Everything a fresh Debian machine needs, from nothing: `make test`, `make demo`, `make bench`.
PYTHON      ?= python3
VENV        ?= .venv
MASAKARI_VENV ?= $(CURDIR)/.venv-masakari
MM_VENV     ?= $(CURDIR)/.venv-mm
NOVA_VENV   ?= $(CURDIR)/.venv-nova
APT_PACKAGES := $(shell grep -v '^\s*\#' deps/apt.txt | xargs)
PYTEST_ARGS ?=

export MASAKARI_VENV MM_VENV NOVA_VENV

.PHONY: all deps apt pacemaker-remote test demo bench sample-config docs clean

all: test

apt: $(VENV)/.apt-stamp
$(VENV)/.apt-stamp: deps/apt.txt
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.stamp: pyproject.toml $(VENV)/.apt-stamp
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[libvirt,systemd,etcd,metrics,messaging,test]'
	touch $@

# The real recovery API, pinned, in its own venv (it pulls eventlet; we never do).
$(MASAKARI_VENV)/.stamp:
	$(PYTHON) -m venv $(MASAKARI_VENV)
	$(MASAKARI_VENV)/bin/pip install -q 'masakari==22.0.0' 'python-masakariclient==8.9.0'
	touch $@

# A real Nova for tests/engine/test_real_nova.py (tests/fixtures/nova.py), pinned, in its own
# venv. cotyledon is what oslo.service's threading backend (Nova 34's default) runs its
# workers with; nothing in nova's requirements pulls it in.
$(NOVA_VENV)/.stamp:
	$(PYTHON) -m venv $(NOVA_VENV)
	$(NOVA_VENV)/bin/pip install -q 'nova==34.0.0' 'openstack-placement==16.0.0' 'cotyledon==2.2.0'
	touch $@

# The incumbent, for side-by-side benchmarks.
$(MM_VENV)/.stamp:
	$(PYTHON) -m venv $(MM_VENV)
	$(MM_VENV)/bin/pip install -q 'masakari-monitors==22.0.0' libvirt-python
	touch $@

# pacemaker_remote for the live cluster's remote nodes (tests/fixtures/pacemaker_cluster.py).
# Debian's pacemaker-remote package conflicts with pacemaker (installing it removes the
# cluster stack), so its daemon is unpacked, not installed: the same build as the installed
# pacemaker (same version, pinned), run beside the installed libraries.
REMOTED := .deps/pacemaker-remote/usr/sbin/pacemaker-remoted
pacemaker-remote: $(REMOTED)
$(REMOTED): $(VENV)/.apt-stamp
	@set -e; version=$$(dpkg-query -W -f='$${Version}' pacemaker); \
	rm -rf .deps/pacemaker-remote .deps/pacemaker-remote.tmp; \
	mkdir -p .deps/pacemaker-remote.tmp; cd .deps/pacemaker-remote.tmp; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	apt-get download -qq "pacemaker-remote=$$version" 2>/dev/null \
	  || { $$SUDO apt-get update -qq && apt-get download -qq "pacemaker-remote=$$version"; }; \
	dpkg -x pacemaker-remote_*.deb ../pacemaker-remote; cd ..; rm -rf pacemaker-remote.tmp
	@$(REMOTED) --version | head -1

deps: $(VENV)/.stamp $(MASAKARI_VENV)/.stamp $(NOVA_VENV)/.stamp $(REMOTED)

test: deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/python -m demo

bench: deps $(MM_VENV)/.stamp
	$(VENV)/bin/python -m bench

# Both from oslo-config-generator over the namespaces listed in tools/config_reference.py;
# tests/monitors/test_migration.py fails when either is out of date with the code.
sample-config: $(VENV)/.stamp
	$(VENV)/bin/python tools/config_reference.py --sample etc/monitors.conf.sample

docs: sample-config
	$(VENV)/bin/python tools/config_reference.py --reference docs/configuration-reference.md

clean:
	rm -rf $(VENV) $(MASAKARI_VENV) $(MM_VENV) $(NOVA_VENV) .deps/pacemaker-remote
